"""SATL: category-specific thresholds learned from score histograms (docs/methods/satl.md)."""
