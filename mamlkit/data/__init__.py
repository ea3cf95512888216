"""Dataset loaders (Omniglot: download, verify, cache)."""
