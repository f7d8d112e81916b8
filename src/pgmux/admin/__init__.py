"""pgmux.admin."""
