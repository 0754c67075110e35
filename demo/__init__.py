"""`make demo`: the whole service on one machine with no keys (see demo/__main__.py)."""
