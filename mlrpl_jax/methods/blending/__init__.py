"""SARB and DSRB: semantic-aware representation blending (docs/methods/sarb.md, dsrb.md)."""
