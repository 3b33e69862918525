"""The core is UI-free: gateway, telemetry, hosts, config and state never import Textual."""

from __future__ import annotations

import subprocess
import sys


def test_core_does_not_import_textual() -> None:
    code = (
        "import sys\n"
        "import forge_tui.config, forge_tui.state, forge_tui.gateway.app, forge_tui.telemetry, forge_tui.hosts,"
        " forge_tui.runtime, forge_tui.control.local, forge_tui.control.remote, forge_tui.operator.admin_http, forge_tui.smoke\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core imported Textual: {out.stdout.strip()}"
