"""Eval suites through the real route: a promptfoo-compatible harness wired to the gateway.

``suite`` (the config subset), ``assertions`` (scoring), ``runner`` (sequential, startup-aware
requests), ``summary`` (per-target pass rate and latency), ``store`` (the history database's
``eval_*`` tables), ``export`` (promptfoo results JSON v3, Markdown), ``fixtures`` (generated images
and clips for the shipped suites).
"""
