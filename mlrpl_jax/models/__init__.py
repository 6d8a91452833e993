"""Flax modules of the shared network (METHODS.md §4)."""
