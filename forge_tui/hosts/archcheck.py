"""Does a host's serving build know an architecture? Asked of the binary itself, without weights.

The choice: for each architecture we write a ~50-byte GGUF that declares only
``general.architecture`` (``gguf.probe_gguf``) to a temp dir on the host and start the serving
binary on it. llama.cpp's loader looks the architecture up first:

- unknown: ``error loading model: unknown model architecture: 'gemma4'`` (the seed's failure);
- known: the lookup passes and loading stops at the first missing hyperparameter
  (``error loading model hyperparameters: key not found in model: gemma3.context_length``).

Either way the process exits within a second, nothing is allocated and no weights are read, and
the verdict comes from the exact code that will later load the real file. Anything else
(a crash, a bind error, a binary that does not exist) is "inconclusive" with the output as
evidence, never a silent pass. ``strings`` on the binary was rejected: architecture names live in
a table that tells nothing about whether the loader for them works.

Two ways to run "the binary": a ``llama-server`` path on the host (built by the rebuild job),
or, on a ``local`` host whose backends are xllamacpp servers, the same xllamacpp in a child
Python process.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from .gguf import probe_gguf
from .transport import CommandTimeout, Transport

__all__ = ["XLLAMACPP_SCRIPT", "ArchVerdict", "ServingBinary", "check_architectures", "classify"]

# Loads a GGUF with the real llama.cpp inside xllamacpp (what the demo backends run).
XLLAMACPP_SCRIPT = r"""
import sys
import xllamacpp
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
p.n_ctx = 64
p.port = int(sys.argv[2])
try:
    server = xllamacpp.Server(p)
except Exception as exc:
    print(f"xllamacpp: {exc}", file=sys.stderr)
    sys.exit(1)
print("loaded", file=sys.stderr)
"""

_UNKNOWN = re.compile(r"unknown model architecture: '([^']*)'")
_KNOWN = (
    re.compile(r"key not found in model: ([\w.-]+)"),
    re.compile(r"error loading model hyperparameters"),
    re.compile(r"error loading model vocabulary"),
    re.compile(r"missing tensor"),
    re.compile(r"wrong number of tensors"),
)


@dataclass(frozen=True, slots=True)
class ArchVerdict:
    architecture: str
    outcome: str  # known, unknown, inconclusive
    evidence: str


@dataclass(frozen=True, slots=True)
class ServingBinary:
    """How to start the host's llama.cpp on a model path."""

    label: str  # for evidence: "/home/forge/src/llama.cpp/build/bin/llama-server" or "xllamacpp (python3)"
    argv_prefix: tuple[str, ...]  # the command before the model path
    kind: str = "llama-server"  # llama-server | xllamacpp

    @classmethod
    def llama_server(cls, path: str) -> ServingBinary:
        return cls(path, (path,), "llama-server")

    @classmethod
    def xllamacpp(cls, python: str = sys.executable) -> ServingBinary:
        return cls(f"xllamacpp ({python})", (python, "-c", XLLAMACPP_SCRIPT), "xllamacpp")

    def argv(self, model_path: str, port: int) -> list[str]:
        if self.kind == "xllamacpp":
            return [*self.argv_prefix, model_path, str(port)]
        # Only flags every llama-server generation accepts. Port 0: the OS picks a free one, should
        # a build bind before it loads (nothing is ever served: loading fails first).
        return [*self.argv_prefix, "-m", model_path, "--host", "127.0.0.1", "--port", str(port)]


# llama.cpp's log prefix ("0.00.008.197 E ") says nothing to an operator.
_LOG_PREFIX = re.compile(r"^\s*\d+\.\d+\.\d+\.\d+\s+[A-Z]\s+", re.M)


def classify(architecture: str, output: str, exit_status: int | None) -> ArchVerdict:
    """The verdict from the loader's own words."""
    output = _LOG_PREFIX.sub("", output)
    if m := _UNKNOWN.search(output):
        line = next((ln.strip() for ln in output.splitlines() if "unknown model architecture" in ln), m.group(0))
        return ArchVerdict(architecture, "unknown", line)
    key = _KNOWN[0].search(output)
    if key and not key.group(1).startswith(architecture + "."):
        # A hyperparameter of some other architecture: the file was not the probe we wrote.
        return ArchVerdict(
            architecture, "inconclusive", f"the loader asked for {key.group(1)!r}, not an {architecture!r} key"
        )
    for pat in _KNOWN:
        if m := pat.search(output):
            line = next((ln.strip() for ln in output.splitlines() if pat.search(ln)), m.group(0))
            # The probe file has no weights on purpose: an error *after* the architecture is the pass.
            return ArchVerdict(
                architecture,
                "known",
                f"the loader accepted the architecture and stopped later, as expected on a weightless probe file: "
                f"{line}",
            )
    tail = " | ".join(output.strip().splitlines()[-3:])
    if exit_status == 0:
        return ArchVerdict(architecture, "inconclusive", f"binary exited 0 on a weightless GGUF: {tail or 'no output'}")
    return ArchVerdict(architecture, "inconclusive", f"exit {exit_status}: {tail or 'no output'}")


async def check_architectures(
    transport: Transport,
    binary: ServingBinary,
    architectures: list[str],
    *,
    timeout: float = 60.0,
) -> dict[str, ArchVerdict]:
    """Run ``binary`` on a probe GGUF per architecture in a temp dir on the host (removed after)."""
    archs = list(dict.fromkeys(a for a in architectures if a))
    if not archs:
        return {}
    res = await transport.run(["mktemp", "-d", "/tmp/forge-arch.XXXXXX"], 15.0)
    tmp = res.out.strip()
    if not res.ok or not tmp.startswith("/tmp/forge-arch."):
        return {a: ArchVerdict(a, "inconclusive", f"cannot make a temp dir: {res.reason(2)}") for a in archs}
    out: dict[str, ArchVerdict] = {}
    try:
        for i, arch in enumerate(archs):
            path = f"{tmp}/probe-{i}.gguf"
            w = await transport.run(["sh", "-c", 'cat > "$1"', "forge-write", path], 15.0, stdin=probe_gguf(arch))
            if not w.ok:
                out[arch] = ArchVerdict(arch, "inconclusive", f"cannot write the probe GGUF: {w.reason(2)}")
                continue
            try:
                r = await transport.run(binary.argv(path, 0), timeout)
            except CommandTimeout:
                out[arch] = ArchVerdict(
                    arch, "inconclusive", f"{binary.label} did not exit within {timeout:g}s on a weightless GGUF"
                )
                continue
            if r.exit_status in (126, 127):
                out[arch] = ArchVerdict(arch, "inconclusive", f"cannot run {binary.label}: {r.reason(2)}")
                continue
            out[arch] = classify(arch, r.err + "\n" + r.out, r.exit_status)
    finally:
        await transport.run(["rm", "-rf", tmp], 15.0)
    return out
