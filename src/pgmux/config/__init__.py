"""pgmux.config."""
