"""Simple partial-label baselines of the field: the shared network trained with one loss that
treats the unknown labels in its own way (docs/methods/partial_losses.md)."""
