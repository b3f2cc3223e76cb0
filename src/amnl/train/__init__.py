"""Stage 4: losses, the training loop and the run directory."""
