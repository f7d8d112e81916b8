"""Every command's --help reads as written: no argparse escapes (%%) shown to the user."""

from __future__ import annotations

import pytest

from pgmux.cli.main import main

COMMANDS = ["serve", "info", "ps", "kill", "killall", "doctor", "plan", "wrap", "top"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_no_escaped_percent(command: str | None,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*([command] if command else []), "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "usage: pgmux" in text
    assert "%%" not in text, [line for line in text.splitlines() if "%%" in line]
