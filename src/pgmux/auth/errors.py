"""The error raised when pgmux cannot log in to a PostgreSQL server."""

from __future__ import annotations


class AuthError(Exception):
    """Server login cannot proceed: a password is missing, of the wrong kind, or the server
    asked for a method or SASL mechanism pgmux does not speak, or the exchange failed."""
