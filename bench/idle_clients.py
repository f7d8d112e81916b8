"""Opens many idle PostgreSQL client connections with raw sockets and holds them.

Run as its own process (so its file descriptors and memory are not the benchmark's):

    python idle_clients.py HOST PORT COUNT [USER] [DATABASE]

Each connection sends a StartupMessage (protocol 3.0) and reads until ReadyForQuery, which
needs trust auth. When all are open it prints `READY <opened> <failed> <first error>` on stdout
and holds them until stdin is closed or a line is written to it; then it closes them and exits.
"""

from __future__ import annotations

import resource
import socket
import struct
import sys
import time

BATCH = 100  # NOTE: below the poolers' listen backlog (128), so no SYN is dropped and retried
TIMEOUT = 30.0


def startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def read_until_ready(sock: socket.socket) -> str | None:
    """Read the server's answer up to ReadyForQuery; None when ready, else an error text."""
    buf = b""
    while True:
        while len(buf) >= 5:
            kind = buf[0:1]
            (length,) = struct.unpack("!I", buf[1:5])
            if len(buf) < 1 + length:
                break
            body = buf[5:1 + length]
            buf = buf[1 + length:]
            if kind == b"Z":
                return None
            if kind == b"E":
                fields = [f[1:].decode(errors="replace") for f in body.split(b"\0") if f]
                return "ErrorResponse: " + " ".join(fields)
            if kind == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                return f"server asked for authentication (code {struct.unpack('!I', body[:4])[0]})"
        chunk = sock.recv(65536)
        if not chunk:
            return "connection closed during startup"
        buf += chunk


def open_clients(host: str, port: int, count: int, user: str, database: str
                 ) -> tuple[list[socket.socket], int, str]:
    held: list[socket.socket] = []
    failed = 0
    first_error = ""
    startup = startup_message(user, database)
    for start in range(0, count, BATCH):
        batch: list[socket.socket] = []
        for _ in range(min(BATCH, count - start)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            try:
                s.connect((host, port))
                s.sendall(startup)
                batch.append(s)
            except OSError as exc:
                failed += 1
                first_error = first_error or f"connect: {exc}"
                s.close()
        for s in batch:
            try:
                err = read_until_ready(s)
            except OSError as exc:
                err = f"read: {exc}"
            if err is None:
                held.append(s)
            else:
                failed += 1
                first_error = first_error or err
                s.close()
    return held, failed, first_error


def main() -> int:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    user = sys.argv[4] if len(sys.argv) > 4 else "postgres"
    database = sys.argv[5] if len(sys.argv) > 5 else "postgres"
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    t0 = time.monotonic()
    held, failed, first_error = open_clients(host, port, count, user, database)
    took = time.monotonic() - t0
    print(f"READY {len(held)} {failed} {took:.2f} {first_error}", flush=True)
    sys.stdin.readline()
    for s in held:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
