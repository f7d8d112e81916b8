"""The error raised when pgmux cannot log in to a PostgreSQL server."""

from __future__ import annotations

# PgBouncer's reason for closing a server whose authentication request it could not
# answer; it becomes the pool's cached login error ("server login has been failing,
# cached error: failed to answer authreq (server_login_retry)").
ANSWER_FAILED = "failed to answer authreq"


class AuthError(Exception):
    """Server login cannot proceed: a password is of the wrong kind, the server asked for a
    method or SASL mechanism pgmux does not speak, or the exchange failed.

    ``str(err)`` is the log line (PgBouncer's wording). ``client_message``, when set, is
    what PgBouncer sends at once to every client waiting for this pool ("server login
    failed: wrong password type"); when None, PgBouncer only closes the server with
    ``ANSWER_FAILED`` and the waiting clients learn it from server_login_retry.
    """

    def __init__(self, message: str, client_message: str | None = None) -> None:
        super().__init__(message)
        self.client_message = client_message
