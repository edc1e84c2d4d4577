"""Motion representations: SMPL-X/SHOW/BEAT vector layouts, the SMPL-X skeleton, TED direction vectors."""
