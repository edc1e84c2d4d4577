"""Loaded models that turn audio into takes (UniEG, DiffGesture) and what they share."""
