"""pgmux.stats."""
