"""`sheg eval` and the motion metrics."""
