"""Audio in (decoding, mel and HuBERT features) and training data (SMPL-X takes + speech -> windows)."""
