"""A fixed corpus of malformed and out-of-place frontend messages, one or more per message type,
each with the answer its sender must get."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tests.faults import wire as w


@dataclass(frozen=True)
class Case:
    """Bytes a logged-in client sends; a Sync follows (when `sync`) where a real client would
    send one, in the same write or in a later one.

    expect "protocol": an ErrorResponse with SQLSTATE 08P01, then the connection is closed or,
    as PostgreSQL itself does for a message it can frame but not read, a ReadyForQuery after
    which the connection works. Any other SQLSTATE: that ErrorResponse (PostgreSQL's own
    answer to a well-formed message in the wrong place), then ReadyForQuery. "": no error,
    ReadyForQuery (PostgreSQL ignores the message).
    """

    name: str
    data: bytes
    expect: str = "protocol"
    sync: bool = True


CORPUS: list[Case] = [
    # Framing: lengths no message can have, types no frontend sends.
    Case("length_below_4", b"Q\0\0\0\x03"),
    Case("length_zero", b"S\0\0\0\0"),
    Case("length_over_1gb", b"Q\x40\x00\x00\x05x"),
    Case("length_negative", b"P\xff\xff\xff\xff"),
    Case("unknown_type", w.msg(b"z", b"hello")),
    Case("type_nul", w.msg(b"\0")),
    # NOTE: a StartupMessage or SSLRequest after login reads as type 0 with a length made of
    # the packet's own bytes; PostgreSQL refuses the type before it reads any length.
    Case("startup_after_login", w.startup()),
    Case("ssl_request_after_login", struct.pack("!II", 8, 80877103)),
    # Query
    Case("query_no_terminator", w.msg(b"Q", b"select 1"), sync=False),
    Case("query_empty_body", w.msg(b"Q"), sync=False),
    Case("query_nul_inside", w.msg(b"Q", b"select 1\0garbage\0"), sync=False),
    # Parse
    Case("parse_name_no_terminator", w.msg(b"P", b"stmt")),
    Case("parse_empty_body", w.msg(b"P")),
    Case("parse_query_no_terminator", w.msg(b"P", b"s1\0select 1")),
    Case("parse_unnamed_query_no_terminator", w.msg(b"P", b"\0select 1")),
    Case("parse_no_parameter_count", w.msg(b"P", b"s1\0select 1\0")),
    Case("parse_parameter_count_too_big",
         w.msg(b"P", b"s1\0select $1\0" + struct.pack("!hI", 5, 23))),
    # Bind
    Case("bind_truncated", w.msg(b"B", b"\0s")),
    Case("bind_portal_no_terminator", w.msg(b"B", b"portal")),
    Case("bind_empty_body", w.msg(b"B")),
    Case("bind_parameter_count_too_big",
         w.parse("", "select $1::int") +
         w.msg(b"B", b"\0\0" + struct.pack("!hhi", 0, 3, 1) + b"1")),
    # Describe
    Case("describe_empty_body", w.msg(b"D")),
    Case("describe_bad_kind", w.msg(b"D", b"Xname\0")),
    Case("describe_name_no_terminator", w.msg(b"D", b"Sname")),
    # Execute
    Case("execute_truncated", w.msg(b"E", b"\0")),
    Case("execute_portal_no_terminator", w.msg(b"E", b"portal")),
    # Close
    Case("close_empty_body", w.msg(b"C")),
    Case("close_bad_kind", w.msg(b"C", b"Zx\0")),
    Case("close_name_no_terminator", w.msg(b"C", b"Sname")),
    # Sync, Flush, FunctionCall, PasswordMessage
    Case("sync_with_body", w.msg(b"S", b"junk"), sync=False),
    Case("flush_with_body", w.msg(b"H", b"junk")),
    Case("function_call_truncated", w.msg(b"F", b"\0\0"), sync=False),
    Case("password_after_login", w.password("secret")),
    # Well-formed messages out of order: PostgreSQL's answer, the connection stays usable.
    Case("bind_unknown_statement", w.bind("nope") + w.execute(), "26000"),
    Case("bind_unnamed_without_parse", w.bind("") + w.execute(), "26000"),
    Case("describe_unknown_statement", w.describe("S", "nope"), "26000"),
    Case("execute_unknown_portal", w.execute("nope"), "34000"),
    Case("execute_without_bind", w.execute(), "34000"),
    Case("copy_data_outside_copy", w.copy_data(b"1\n"), ""),
    Case("copy_done_outside_copy", w.copy_done(), ""),
    Case("copy_fail_outside_copy", w.copy_fail(), ""),
]
