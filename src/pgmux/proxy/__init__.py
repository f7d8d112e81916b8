"""pgmux.proxy."""
