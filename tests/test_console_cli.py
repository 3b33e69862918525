"""Issue 11 items 13-14: the CLI explains itself (every option has help; serve says what it does),
says where it looked for a catalog when there is none, and the demo says it resumes its state."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forge_tui.cli import build_parser
from forge_tui.cli.gateway import _resume_or_fresh

COMMANDS = ("serve", "demo", "attach", "smoke", "preflight", "job", "hosts")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_and_argument_has_help(command: str) -> None:
    sub = _subparsers(build_parser())[command]
    missing = [
        action.option_strings[0] if action.option_strings else action.dest
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, f"{command}: no help for {missing}"


def test_top_level_options_have_help() -> None:
    parser = build_parser()
    missing = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert not missing


def test_serve_help_says_what_serve_does() -> None:
    text = _subparsers(build_parser())["serve"].format_help()
    assert "without the console" in text and "admin API" in text and "drain" in text


def test_outside_the_repo_it_says_where_it_looked_and_how_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FORGE_CONFIG"}
    env["HOME"] = str(tmp_path)  # no ~/.config/forge-tui/forge.yaml either
    out = subprocess.run(
        [sys.executable, "-m", "forge_tui"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    err = out.stderr
    assert str(tmp_path / "config" / "forge.yaml") in err and ".config/forge-tui/forge.yaml" in err
    assert "forge-tui demo" in err and "--config" in err and "$FORGE_CONFIG" in err
    assert "Traceback" not in err


def test_demo_says_it_resumes_and_fresh_moves_the_state_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "demo"
    _resume_or_fresh(state, fresh=False)  # nothing yet: nothing to say
    assert capsys.readouterr().out == ""
    state.mkdir()
    (state / "state.json").write_text("{}")
    (state / "audit.jsonl").write_text('{"action": "swap"}\n{"action": "rollback"}\n')
    _resume_or_fresh(state, fresh=False)
    said = capsys.readouterr().out
    assert "resuming the last demo's state" in said and "2 audited changes" in said and "--fresh" in said
    assert state.exists()
    _resume_or_fresh(state, fresh=True)
    said = capsys.readouterr().out
    assert "--fresh" in said and not state.exists()
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("demo.before-")]
    assert (aside / "audit.jsonl").exists()  # moved aside, not deleted
