"""Beside the stages: what a model costs on the machine at hand (memory, speed, RSS, FLOPs),
measured, with one description of the machine for every report."""
