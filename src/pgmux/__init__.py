"""pgmux: a PostgreSQL connection pooler and connection doctor."""

__version__ = "0.1.0"
