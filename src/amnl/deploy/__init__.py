"""Stage 6: everything after training (prediction, export, profiling)."""
