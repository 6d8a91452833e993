"""Flax modules of the shared network (docs/methods/network.md §4)."""
