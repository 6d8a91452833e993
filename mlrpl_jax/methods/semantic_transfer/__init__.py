"""SST and HST: pseudo labels from predicted label co-occurrence and cross-image feature similarity (docs/methods/sst.md, hst.md)."""
