"""Data: TFDS builders, partial labels, label graph, input pipeline."""
