"""The throwaway PostgreSQL used by `pgmux serve`'s default run and by the tests."""

from pgmux.embedded.install import EmbeddedPostgresError
from pgmux.embedded.server import EmbeddedPostgres, free_port

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "free_port"]
