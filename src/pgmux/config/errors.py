"""The one error type raised for a bad pgbouncer.ini, userlist.txt or DATABASE_URL."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem, located by file, line and key where they are known.

    ``str(err)`` reads like ``pgbouncer.ini:12: key 'max_client_conn': invalid integer 'abc'``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        what = f"key '{self.key}': " if self.key is not None else ""
        return f"{where}{what}{self.message}"

    def __str__(self) -> str:
        return self._render()
