"""The GGUF header reader against real files (the Gemma 3 270M GGUF, files written by gguf-py),
and the architecture check against the real llama.cpp loader (xllamacpp)."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import pytest

from forge_tui.hosts.archcheck import ServingBinary, check_architectures, classify
from forge_tui.hosts.gguf import FIRST_READ_BYTES, GgufError, NeedMoreData, parse_header, probe_gguf, read_remote_header
from forge_tui.hosts.transport import LocalTransport
from tests.support.gguf_files import array_first_gguf


def reader_arch(path: Path) -> str:
    f = gguf.GGUFReader(str(path)).fields["general.architecture"]
    return bytes(f.parts[f.data[0]]).decode()


@pytest.fixture(scope="module")
def gemma3_gguf() -> Path:
    from forge_tui.launch import resolve_gguf

    return resolve_gguf("@gemma3-270m")


def test_real_gemma3_header_from_the_first_64k(gemma3_gguf: Path) -> None:
    with open(gemma3_gguf, "rb") as fh:
        head = fh.read(FIRST_READ_BYTES)
    h = parse_header(head)
    # (gguf-py's reader agrees, but parsing the whole 250 MB file takes it ~50 s: checked once by hand.)
    assert (h.architecture, h.version, h.tensor_count, h.name) == ("gemma3", 3, 236, "Gemma 3 270m")
    assert h.bytes_read < 4096  # the architecture is the first key: a few hundred bytes suffice


def test_gguf_py_file_declaring_an_unknown_architecture(unknown_arch_gguf: Path) -> None:
    h = parse_header(unknown_arch_gguf.read_bytes())
    assert (h.architecture, h.tensor_count) == ("gemma9", 1)


def test_probe_gguf_is_a_valid_gguf() -> None:
    data = probe_gguf("gemma4")
    assert len(data) < 80
    h = parse_header(data)
    assert (h.architecture, h.version, h.tensor_count, h.kv_count) == ("gemma4", 3, 0, 1)


def test_probe_gguf_read_by_gguf_py(tmp_path: Path) -> None:
    p = tmp_path / "probe.gguf"
    p.write_bytes(probe_gguf("qwen3moe"))
    assert reader_arch(p) == "qwen3moe"


def test_architecture_behind_a_long_array_needs_more_bytes(tmp_path: Path) -> None:
    p = array_first_gguf(tmp_path / "a.gguf", "qwen3")
    assert reader_arch(p) == "qwen3"  # gguf-py agrees the file is well-formed
    data = p.read_bytes()
    with pytest.raises(NeedMoreData) as e:
        parse_header(data[:FIRST_READ_BYTES])
    assert e.value.needed > FIRST_READ_BYTES
    h = parse_header(data)
    assert (h.architecture, h.name) == ("qwen3", "array first")


async def test_remote_read_fetches_more_only_when_needed(tmp_path: Path) -> None:
    t = LocalTransport()
    p = array_first_gguf(tmp_path / "a.gguf", "qwen3")
    h = await read_remote_header(t, str(p))
    assert h.architecture == "qwen3" and h.bytes_read > FIRST_READ_BYTES


async def test_remote_read_errors_are_clear(tmp_path: Path) -> None:
    t = LocalTransport()
    with pytest.raises(GgufError, match=r"cannot read .*No such file"):
        await read_remote_header(t, str(tmp_path / "missing.gguf"))
    (tmp_path / "notgguf.gguf").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(GgufError, match="not a GGUF file"):
        await read_remote_header(t, str(tmp_path / "notgguf.gguf"))
    full = array_first_gguf(tmp_path / "full.gguf", "qwen3").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(full[:100_000])
    with pytest.raises(GgufError, match="file ends inside the GGUF header"):
        await read_remote_header(t, str(tmp_path / "cut.gguf"))
    (tmp_path / "v1.gguf").write_bytes(b"GGUF" + struct.pack("<I", 1) + b"\0" * 64)
    with pytest.raises(GgufError, match="unsupported GGUF version 1"):
        await read_remote_header(t, str(tmp_path / "v1.gguf"))


def test_classify_reads_the_loaders_words() -> None:
    unknown = "llama_model_load: error loading model: unknown model architecture: 'gemma4'\n"
    assert classify("gemma4", unknown, 1).outcome == "unknown"
    known = (
        "E llama_model_load: error loading model: error loading model hyperparameters: "
        "key not found in model: gemma3.context_length\n"
    )
    assert classify("gemma3", known, 1).outcome == "known"
    # A missing key of another architecture is not evidence for this one.
    assert classify("gemma3", known.replace("gemma3.", "llama."), 1).outcome == "inconclusive"
    v = classify("gemma3", "error: couldn't bind HTTP server socket\n", 1)
    assert v.outcome == "inconclusive" and "bind" in v.evidence


@pytest.mark.llama
async def test_real_llama_cpp_loader_on_probe_ggufs() -> None:
    """The decision rule, proven with the real llama.cpp (xllamacpp) in a child process: a known
    architecture gets past the lookup, an unknown one fails on it."""
    t = LocalTransport()
    binary = ServingBinary.xllamacpp()
    verdicts = await check_architectures(t, binary, ["gemma3", "gemma9"], timeout=120)
    assert verdicts["gemma3"].outcome == "known", verdicts["gemma3"]
    assert "key not found in model: gemma3." in verdicts["gemma3"].evidence
    assert verdicts["gemma9"].outcome == "unknown", verdicts["gemma9"]
    assert "unknown model architecture: 'gemma9'" in verdicts["gemma9"].evidence
