"""forge-tui: an operations console with an embedded OpenAI-compatible gateway for a homelab AI platform."""

__version__ = "0.1.0"
