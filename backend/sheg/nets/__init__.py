"""The networks (UniEG, DiffGesture), with their official parameter names; they know nothing of schedules."""
