"""Files: model folders and official checkpoint import, take files, restricted unpickling, SMPL-X rig files."""
