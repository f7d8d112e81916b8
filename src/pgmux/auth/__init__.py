"""pgmux.auth."""
