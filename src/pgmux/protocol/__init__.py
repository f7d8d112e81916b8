"""pgmux.protocol."""
