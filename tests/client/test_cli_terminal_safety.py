"""What the CLI refuses to trust: a config file others could write, and control
characters a replica prints (which would drive the user's terminal)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import cli
from alphaswarm_client.output import Output
from alphaswarm_client.streaming import LogPrinter, colour_of


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_config_file_others_can_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "current_context: x\ncontexts:\n  x: {target: '127.0.0.1:1', token_command: [echo, tok]}\n",
        encoding="utf-8",
    )
    config.chmod(0o664)
    monkeypatch.setenv("ALPHASWARM_CONFIG", str(config))
    assert cli.main(["list"]) == 2
    assert "writable by other users" in capsys.readouterr().err
    config.chmod(0o600)
    assert cli.main(["--timeout", "1", "list"]) == 1  # now used: the target refuses


def test_log_lines_escape_control_characters_on_a_terminal_only() -> None:
    entry = types_pb2.LogEntry(
        instance_id="web-0\x1b[2J",
        text="hi\x1b]0;pwned\x07 there\r",
        stream=types_pb2.LOG_STREAM_STDERR,
    )
    shown = LogPrinter(Output(stream=_Terminal(), env={"TERM": "xterm"}), timestamps=False)
    line = shown.line(entry)
    assert "\x1b[2J" not in line and "\x1b]0" not in line and "\x07" not in line
    assert "web-0\\x1b[2J" in line and "hi\\x1b]0;pwned\\x07 there\\x0d" in line
    assert colour_of("web-0\x1b[2J") in line  # the replica's colour, and the stderr mark
    piped = LogPrinter(Output(stream=io.StringIO(), env={}), timestamps=False)
    assert piped.line(entry) == "web-0\x1b[2J ! hi\x1b]0;pwned\x07 there\r"  # bytes as written
    no_color = LogPrinter(Output(stream=_Terminal(), env={"NO_COLOR": "1"}), timestamps=False)
    assert "\x1b" not in no_color.line(entry)
