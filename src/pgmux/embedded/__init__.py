"""pgmux.embedded."""
