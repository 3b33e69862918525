"""Key remaps from the catalog's ``keys:`` section: shape checked on load, ids and keys checked against the
console's real bindings (``console.keymap.check_keymap``), and a bad remap stops ``forge-tui`` before the
gateway starts, naming the file and the entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from forge_tui import cli
from forge_tui.cli import gateway as cli_gateway
from forge_tui.config import ConfigError, load_catalog
from forge_tui.console.keymap import HELP_KEYS, KeymapError, check_keymap

REPO = Path(__file__).resolve().parent.parent


def _with_keys(tmp_path: Path, keys: object) -> Path:
    data = yaml.safe_load((REPO / "config" / "forge.yaml").read_text())
    data["keys"] = keys
    path = tmp_path / "forge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_catalog_carries_remaps_and_rejects_empty_keys(tmp_path: Path) -> None:
    cat = load_catalog(_with_keys(tmp_path, {"forge.swap": "ctrl+s", "forge.help": "?,f1"}))
    assert cat.keys == {"forge.swap": "ctrl+s", "forge.help": "?,f1"}
    assert check_keymap(cat.keys) == {"forge.swap": "ctrl+s", "forge.help": "question_mark,f1"}
    with pytest.raises(ConfigError, match="is empty"):
        load_catalog(_with_keys(tmp_path, {"forge.swap": " "}))
    with pytest.raises(ConfigError, match="single word"):
        load_catalog(_with_keys(tmp_path, {"forge swap": "x"}))


def test_ids_keys_and_clashes_are_checked_against_the_real_bindings() -> None:
    assert check_keymap({}) == {}  # the shipped keys never clash
    assert {s.id for s in HELP_KEYS} >= {"forge.swap", "forge.help", "forge.latency.group"}
    with pytest.raises(KeymapError, match=r"keys\.forge\.swapp: unknown binding id \(known: .*forge\.swap"):
        check_keymap({"forge.swapp": "x"})
    with pytest.raises(KeymapError, match=r"forge\.swap and forge\.rollback would both be on 'r'"):
        check_keymap({"forge.swap": "r"})
    with pytest.raises(KeymapError, match="not a key Textual knows"):
        check_keymap({"forge.swap": "ctrl+notakey"})
    with pytest.raises(KeymapError, match="is not a key"):
        check_keymap({"forge.swap": "cmd+s"})
    # Moving a key away frees it for another binding.
    assert check_keymap({"forge.rollback": "u", "forge.swap": "r"}) == {"forge.rollback": "u", "forge.swap": "r"}


async def test_a_bad_remap_stops_the_console_before_the_gateway_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_keys(tmp_path, {"forge.swap": "r"})
    args = cli.build_parser().parse_args(["--config", str(path), "--state-dir", str(tmp_path / "st"), "--port", "0"])
    assert await cli_gateway._console(args, str(path)) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "forge.swap and forge.rollback would both be on 'r'" in err
    assert not (tmp_path / "st" / "admin.token").exists()  # nothing was started


async def test_attach_takes_its_remaps_from_the_catalog_named_with_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_keys(tmp_path, {"forge.help": "ctrl+nothing"})
    args = cli.build_parser().parse_args(["--config", str(path), "attach", "http://127.0.0.1:9", "--token", "t"])
    assert await cli_gateway._attach(args) == 2  # refused before it tries the gateway
    err = capsys.readouterr().err
    assert str(path) in err and "keys.forge.help" in err and "unreachable" not in err
