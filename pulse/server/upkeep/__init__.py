"""Upkeep: the server's periodic jobs (lost tasks, pruning, token rechecks)."""
