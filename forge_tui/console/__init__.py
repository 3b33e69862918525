"""The Textual operations console (a client of ``forge_tui.control`` only)."""

from .app import ForgeApp, Notice

__all__ = ["ForgeApp", "Notice"]
