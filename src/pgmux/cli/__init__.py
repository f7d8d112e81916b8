"""pgmux.cli."""
