"""Runs ``forge-tui --config PATH --port N`` (the console with its embedded gateway) for the benchmark.

It is the real entry point, ``forge_tui.cli.main``, with one difference: the app gets one extra,
hidden key binding (F12) whose action writes a byte to the file descriptor named by
``FORGE_BENCH_ACK_FD``. The benchmark presses F12 in the pseudo-terminal while the gateway is
under load and times the acknowledgement: that is how long the console takes to answer a key.

``python -m bench.console_host --config PATH --port N`` (stdin/stdout/stderr on a pty).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from textual.binding import Binding

if TYPE_CHECKING:
    from forge_tui.console.app import ForgeApp

ACK_ENV = "FORGE_BENCH_ACK_FD"
PROBE_KEY = "f12"
PROBE_BYTES = b"\x1b[24~"  # what an xterm sends for F12


def _bench_app_class() -> type[ForgeApp]:
    from forge_tui.console.app import ForgeApp

    ack_fd = int(os.environ[ACK_ENV])

    class BenchForgeApp(ForgeApp):
        """ForgeApp plus the benchmark's key probe; nothing else changes."""

        BINDINGS = [Binding(PROBE_KEY, "bench_probe", "bench probe", show=False, priority=True)]

        def action_bench_probe(self) -> None:
            os.write(ack_fd, b"k")

    return BenchForgeApp


def main(argv: list[str] | None = None) -> int:
    from forge_tui import cli
    from forge_tui.console import app as app_module

    # cli.gateway._console imports ForgeApp from this module at call time, so the subclass is what runs.
    app_module.ForgeApp = _bench_app_class()  # type: ignore[misc]  # replacing a class on purpose
    return cli.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
