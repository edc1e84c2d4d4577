"""`sheg train`: one training loop over a recipe per model family."""
