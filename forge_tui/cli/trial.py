"""``forge-tui trial report``: the trial scorecard from the history file, no gateway needed.

Exit code: 0 keep for every trial role, 1 any role should roll back, 2 not enough data (and no
roll back), 3 the inputs cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..state import RoutingState
from ..telemetry import HistoryError
from ..trial.when import parse_when
from .common import fail, load_config, state_dir

__all__ = ["register"]


def _report(args: argparse.Namespace) -> int:
    from ..trial import render_markdown, scorecard_from_state

    path, catalog = load_config(args)
    sdir = state_dir(args, path, catalog)
    history = Path(args.history).expanduser() if args.history else sdir / "history.sqlite3"
    now = time.time()
    try:
        since = parse_when(args.since, now) if args.since else None
        until = parse_when(args.until, now) if args.until else None
    except argparse.ArgumentTypeError as exc:
        return fail(str(exc), 3)
    try:
        sc = scorecard_from_state(RoutingState(catalog, sdir), history, since=since, until=until, now=now)
    except (HistoryError, ValueError) as exc:
        return fail(str(exc), 3)
    text = sc.model_dump_json(indent=2) if args.format == "json" else render_markdown(sc)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")
    return sc.exit_code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "trial",
        help="the trial scorecard: keep or roll back, per trial role",
        description="Compare each trial role's trial model with its baseline from the request history.",
    )
    tsub = p.add_subparsers(dest="trial_cmd", metavar="SUBCOMMAND", required=True)
    r = tsub.add_parser(
        "report",
        help="print the scorecard (exit 0 keep, 1 roll back, 2 not enough data, 3 unreadable input)",
        description="Build the scorecard from the history file; works with no gateway running. "
        "Exit 0: keep for every trial role; 1: a role should roll back; 2: not enough data; 3: unreadable input.",
    )
    r.add_argument("--config", default=None, help="catalog YAML (default: $FORGE_CONFIG or config/forge.yaml)")
    r.add_argument("--state-dir", default=None, help="state directory (default: the catalog's, else per config)")
    r.add_argument("--history", default=None, help="history database (default: <state dir>/history.sqlite3)")
    r.add_argument(
        "--since",
        default=None,
        help="window start: unix seconds, ISO date/time, or -7d (default: a week before the trial began)",
    )
    r.add_argument("--until", default=None, help="window end (default: now)")
    r.add_argument(
        "--format",
        choices=("md", "json"),
        default="md",
        help="Markdown for a post, or JSON (schema forge-trial-scorecard/1)",
    )
    r.add_argument("-o", "--output", default=None, help="write to this file instead of stdout")
    r.set_defaults(handler=_report)
    sc = tsub.add_parser(
        "schema",
        help="print the JSON Schema of `trial report --format json` (forge-trial-scorecard/1)",
        description="The report's JSON Schema, generated from the pydantic models it is built with.",
    )
    sc.set_defaults(handler=_schema)


def _schema(args: argparse.Namespace) -> int:
    import json

    from ..trial import Scorecard

    sys.stdout.write(json.dumps(Scorecard.model_json_schema(), indent=2) + "\n")
    return 0
