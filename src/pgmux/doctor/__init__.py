"""pgmux.doctor."""
