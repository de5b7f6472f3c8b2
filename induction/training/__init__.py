"""Training toy models with checkpoints, and the embedded default models trained on first use."""
