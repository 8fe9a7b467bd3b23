"""Training: stages and the one visible training loop on Accelerate."""
