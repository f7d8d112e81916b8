"""killall's filters, ps rows, duration parsing and the plain-text rendering."""

from __future__ import annotations

import io

import pytest

from pgmux.cli.main import main
from pgmux.config.values import TIME_UNITS, parse_time
from pgmux.doctor.facts import Limits
from pgmux.doctor.report import Output, info_json, one_line, render_diagnosis, render_ps
from pgmux.doctor.rules import diagnose
from pgmux.doctor.select import SessionFilter, ps_rows, select_sessions
from pgmux.doctor.units import format_bytes, format_duration, parse_duration
from tests.doctor.recorded import AT, OWN_PID, facts, session

SESSIONS = (
    session(OWN_PID, "active", app="pgmux-doctor"),
    session(1, "idle", app="leaky-worker", in_state=600),
    session(2, "idle", app="leaky-worker", in_state=5),
    session(3, "idle in transaction", app="stuck-job", in_state=700, xact=720),
    session(4, "idle in transaction (aborted)", app="stuck-job", in_state=10, xact=20),
    session(5, "active", app="leaky-worker", user="etl", in_state=900, query_age=900),
    session(6, None, app="", user="other", in_state=0),  # details hidden from us
)


def picked(**kwargs: object) -> list[int]:
    flt = SessionFilter(**kwargs)  # type: ignore[arg-type]
    return [s.pid for s in select_sessions(SESSIONS, OWN_PID, AT, flt)]


@pytest.mark.parametrize(
    ("kwargs", "pids"),
    [
        ({"idle": True}, [1, 2]),
        ({"idle_in_transaction": True}, [3, 4]),
        ({"idle": True, "idle_in_transaction": True}, [1, 2, 3, 4]),
        ({"idle_for": 60.0}, [1, 3]),
        ({"idle": True, "idle_for": 60.0}, [1]),
        ({"application": "leaky-worker"}, [1, 2, 5]),
        ({"idle": True, "application": "leaky-worker"}, [1, 2]),
        ({"user": "etl"}, [5]),
        ({"application": "nobody"}, []),
        ({}, [1, 2, 3, 4, 5, 6]),  # never the own backend
    ],
)
def test_killall_filters_combine_with_and(kwargs: dict[str, object], pids: list[int]) -> None:
    assert picked(**kwargs) == pids


def test_killall_skips_a_poolers_server_connections_unless_asked() -> None:
    pooled = (
        session(20, "idle", app="pgmux", in_state=600),
        session(21, "idle", app="", in_state=600, query="DISCARD ALL"),
        session(22, "idle", app="web - 10.0.0.7:51234", in_state=600),
    )
    sessions = SESSIONS + pooled
    flt = SessionFilter(idle_for=60.0)
    assert [s.pid for s in select_sessions(sessions, OWN_PID, AT, flt)] == [1, 3]
    flt = SessionFilter(idle_for=60.0, include_pooled=True)
    assert [s.pid for s in select_sessions(sessions, OWN_PID, AT, flt)] == [1, 3, 20, 21, 22]


def test_filter_empty() -> None:
    assert SessionFilter().empty
    assert not SessionFilter(user="x").empty


def test_ps_rows_exclude_own_backend_and_keep_the_contract_keys() -> None:
    rows = ps_rows(SESSIONS, OWN_PID, AT)
    assert OWN_PID not in [r["pid"] for r in rows]
    assert len(rows) == 6
    for row in rows:
        assert list(row) == [
            "pid",
            "user",
            "database",
            "application_name",
            "client_addr",
            "state",
            "state_duration",
            "xact_age",
            "query",
            "wait_event",
        ]
    by_pid = {r["pid"]: r for r in rows}
    assert by_pid[3]["state_duration"] == 700.0
    assert by_pid[3]["xact_age"] == 720.0
    assert by_pid[1]["xact_age"] is None
    assert rows[0]["pid"] == 5  # longest in its state first


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("45", 45),
        ("0s", 0),
        ("1.5m", 90),
        ("250ms", 0.25),
        (" 5M ", 300),
        ("30min", 1800),  # the config files' spelling works on the command line too
        ("1h30min", 5400),
        ("10 seconds", 10),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "30x", "5m junk", "-3", "1h-2m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("unit", sorted(TIME_UNITS))
def test_command_line_and_config_read_every_unit_alike(unit: str) -> None:
    for text in (f"3{unit}", f"3 {unit}", f"2{unit.upper()}"):
        assert parse_duration(text) == parse_time(text) > 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.25, "250ms"), (42, "42s"), (303, "5m03s"), (7800, "2h10m"), (273600, "3d04h"),
     (300, "5m"), (7200, "2h"), (86400, "1d")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_bytes() -> None:
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512 bytes"
    assert format_bytes(7634279) == "7.3 MB"


def test_one_line_query() -> None:
    assert one_line("SELECT\n  1") == "SELECT 1"
    assert one_line("x" * 100, width=10) == "x" * 9 + "…"


def test_plain_output_is_aligned_and_has_no_ansi() -> None:
    buf = io.StringIO()
    out = Output(stdout=buf, stderr=io.StringIO())
    assert not out.tty
    render_ps(out, ps_rows(SESSIONS, OWN_PID, AT))
    f = facts(*SESSIONS[1:], max_connections=10)
    render_diagnosis(out, diagnose(f))
    text = buf.getvalue()
    assert "\x1b[" not in text
    lines = text.splitlines()
    header = lines[0]
    assert header.startswith("PID ")
    assert header.index("STATE") == lines[1].index(SESSIONS[5].state or "")
    assert "critical" in text  # 7 / 7 usable


def test_info_json_connections_contract() -> None:
    f = facts(*SESSIONS[1:], limits=Limits(40, 3, 2))
    data = info_json(f)
    assert data["connections"] == {
        "used": 7,
        "max_connections": 40,
        "reserved": 5,
        "usable": 35,
        "available": 28,
    }
    assert data["pooler"]["detected"] is False


def test_plan_command_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--limit", "20", "--dynos", "5", "--processes", "3", "--threads", "5"])
    text = capsys.readouterr().out
    assert code == 1
    assert "75" in text
    assert "\x1b[" not in text


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_plan_refuses_a_limit_below_one(limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--limit", limit])
    assert exc.value.code == 2
    assert "--limit" in capsys.readouterr().err


def test_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "postgresql://x", "--idle-threshold", "soon"])
    assert exc.value.code == 2
    assert "not a duration" in capsys.readouterr().err


def test_killall_without_filters_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["killall", "postgresql://127.0.0.1:1/x", "--yes"]) == 2
    assert "at least one filter" in capsys.readouterr().err


def test_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2"]) == 3
    assert "cannot reach PostgreSQL" in capsys.readouterr().err
