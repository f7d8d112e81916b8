"""pgmux.pool."""
