"""`edge-gemma setup`: which files exist (catalog), what fits (plan), download, device config, installed."""
