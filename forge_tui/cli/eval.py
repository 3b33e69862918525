"""``forge-tui eval``: run promptfoo-style suites through the gateway, list and show stored runs, make fixtures.

Where the gateway comes from: ``--url`` talks to a running one (``forge-tui serve`` or the
console's embedded gateway). ``--config`` without ``--url`` starts the real gateway in this
process on a free loopback port (forge_tui.runtime.Runtime: the same routing, thinking policy
and telemetry as ``serve``) against the backends that catalog names; it does not launch
backends, so they must already be up (``forge-tui demo`` or the homelab's own servers). With
neither, the default catalog's gateway address is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import aio
from ..config import ConfigError
from .common import default_config, fail, load_config, state_dir

__all__ = ["SHIPPED_DIR", "register"]

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "evals"


def _suite_path(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    shipped = SHIPPED_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return shipped if shipped.exists() else p


def _db_path(args: argparse.Namespace) -> Path:
    if getattr(args, "db", None):
        return Path(args.db).expanduser()
    try:
        path, catalog = load_config(args)
        return state_dir(args, path, catalog) / "history.sqlite3"
    except ConfigError:
        from ..state import default_state_dir

        return default_state_dir(getattr(args, "config", None) or default_config()) / "history.sqlite3"


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _case_line(case: Any, done: int, total: int) -> None:
    mark = "ERROR" if case.error is not None else ("PASS " if case.success else "FAIL ")
    extra = ""
    if case.startup_waits or case.saturation_retries:
        extra = f"  (waited {case.waited_s:.1f}s, {case.startup_waits} startup, {case.saturation_retries} 429)"
    why = "" if case.success else f"  {case.reason[:140]}"
    print(
        f"[{done}/{total}] {mark} {case.target:<24} {case.description[:48]:<48} {case.latency_ms:7.0f} ms{extra}{why}",
        flush=True,
    )


def _write(run: Any, out: str | None, fmt: str) -> None:
    from ..evals.export import to_markdown, to_promptfoo

    text = to_markdown(run) if fmt == "md" else json.dumps(to_promptfoo(run), indent=2, ensure_ascii=False) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out} ({'Markdown' if fmt == 'md' else 'promptfoo results JSON v3'})")
    else:
        sys.stdout.write(text)


def _admin_token(args: argparse.Namespace) -> str | None:
    if args.admin_token:
        return str(args.admin_token)
    if args.token_file:
        try:
            return Path(args.token_file).expanduser().read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise SystemExit(fail(f"cannot read admin token file {args.token_file}: {exc.strerror or exc}")) from None
    return None


async def _preflight(url: str, routes: list[str], api_key: str | None) -> str | None:
    """Why the run cannot start (gateway unreachable, a route it does not know), or None."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as c:
            r = await c.get("/v1/models")
    except httpx.HTTPError as exc:
        return f"no gateway answers at {url} ({exc.__class__.__name__}); start `forge-tui serve` or pass --config"
    if r.status_code != 200:
        return f"{url}/v1/models answered HTTP {r.status_code}: {r.text[:200]}"
    try:
        known = {d["id"] for d in r.json()["data"] if isinstance(d, dict)}
    except (ValueError, KeyError, TypeError):
        return f"{url}/v1/models did not answer a model list"
    unknown = [x for x in routes if x not in known]
    if unknown:
        listed = ", ".join(sorted(known)[:16]) + (", ..." if len(known) > 16 else "")
        return f"the gateway knows no route {', '.join(map(repr, unknown))} (roles and models: {listed})"
    return None


async def _run(args: argparse.Namespace) -> int:
    from ..evals import store
    from ..evals.runner import EvalRunner, Target
    from ..evals.suite import SuiteError, load_suite
    from ..evals.summary import compare_table, summarize

    try:
        suite = load_suite(_suite_path(args.suite))
    except SuiteError as exc:
        return fail(str(exc))
    if (suite.max_concurrency or 1) > 1 and args.concurrency == 1:
        print(
            f"note: the suite asks evaluateOptions.maxConcurrency {suite.max_concurrency}; running one case at a time "
            "(parallel requests in a startup window blame the wrong backend); --concurrency N to change"
        )
    providers = {p.route: p for p in suite.providers}
    routes = args.route or [p.route for p in suite.providers]
    if not routes:
        return fail(f"{args.suite}: the suite names no providers; give --route ROLE_OR_MODEL")
    hosts = args.host or [None]
    targets = [
        Target(r, h, providers[r].config if r in providers else (suite.providers[0].config if suite.providers else {}))
        for r in routes
        for h in hosts
    ]
    token = _admin_token(args)
    runtime = None
    url = args.url
    db = _db_path(args)
    if url is None and getattr(args, "config", None):
        from ..runtime import Runtime

        runtime = Runtime(args.config, port=0, host="127.0.0.1", with_hosts=False, admin_token=token)
        token = runtime.admin.token
        runtime.gateway.openai.allow_placement(token)  # --host pins need it; this gateway is ours
        await runtime.start()
        url = runtime.url
        db = Path(args.db).expanduser() if args.db else runtime.state_dir / "history.sqlite3"
        print(f"gateway started in-process on {url} from {args.config} (its backends must already be running)")
    if runtime is None and token is None and args.host:
        # a local `forge-tui serve` publishes its per-run token in its state dir
        try:
            path, catalog = load_config(args)
            token = (state_dir(args, path, catalog) / "admin.token").read_text(encoding="utf-8").strip() or None
        except (ConfigError, OSError):
            token = None
    if url is None and runtime is None:
        try:
            _, catalog = load_config(args)
            url = f"http://{catalog.gateway.host}:{catalog.gateway.port}"
        except ConfigError:
            url = "http://127.0.0.1:8600"
    try:
        problem = await _preflight(str(url), [t.route for t in targets], args.api_key)
        if problem is not None:
            return fail(problem)
        runner = EvalRunner(
            str(url),
            suite,
            targets,
            concurrency=args.concurrency,
            repeat=args.repeat,
            timeout_s=args.timeout,
            admin_token=token,
            api_key=args.api_key,
            startup_wait_s=args.startup_wait,
            on_case=None if args.quiet else _case_line,
        )
        print(f"{suite.label()}: {len(runner.plan())} case(s) on {', '.join(t.label for t in targets)} via {url}")
        run = await runner.run()
    except SuiteError as exc:
        return fail(str(exc))
    finally:
        if runtime is not None:
            await runtime.stop()
    print()
    _print_table(compare_table(summarize(run.cases)))
    if not args.no_store:
        try:
            store.save_run(db, run)
            print(f"\nstored as {run.id} in {db}")
        except store.StoreError as exc:
            print(f"forge-tui: not stored: {exc}", file=sys.stderr)
    if args.output or args.format:
        fmt = args.format or ("md" if (args.output or "").endswith(".md") else "json")
        _write(run, args.output, fmt)
    return 0 if all(c.success for c in run.cases) else 1


def _list(args: argparse.Namespace) -> int:
    import datetime as dt

    from ..evals import store

    print("shipped suites:")
    for p in sorted(SHIPPED_DIR.glob("*.yaml")):
        print(f"  {p.stem:<14} {p}")
    db = _db_path(args)
    try:
        runs = store.list_runs(db, args.limit)
    except store.StoreError as exc:
        print(f"\nno stored runs ({exc})")
        return 0
    print(f"\nstored runs ({db}):")
    if not runs:
        print("  none yet")
    for r in runs:
        when = dt.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M")
        print(
            f"  {r.id:<30} {when}  {r.suite:<14} {r.passed}/{r.total} passed, {r.errors} errors  {', '.join(r.targets)}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..evals import store
    from ..evals.summary import compare_table, summarize

    try:
        run = store.load_run(_db_path(args), args.run)
    except store.StoreError as exc:
        return fail(str(exc))
    if args.format or args.output:
        _write(run, args.output, args.format or ("md" if (args.output or "").endswith(".md") else "json"))
        return 0
    print(f"{run.id}: {run.suite} via {run.url} (concurrency {run.concurrency}, repeat {run.repeat})\n")
    _print_table(compare_table(summarize(run.cases)))
    print()
    for c in run.cases:
        _case_line(c, c.index + 1, len(run.cases))
    return 0


def _fixtures(args: argparse.Namespace) -> int:
    from ..evals.fixtures import FIXTURES_DIR, FixtureError, check_fixtures, generate_fixtures

    out = Path(args.out) if args.out else FIXTURES_DIR
    if args.check:
        problems = check_fixtures(out)
        for p in problems:
            print(f"DIFF {p}")
        print("fixtures agree with expected.json" if not problems else f"{len(problems)} difference(s)")
        return 1 if problems else 0
    try:
        manifest = generate_fixtures(out)
    except FixtureError as exc:
        return fail(str(exc))
    for name, m in manifest.items():
        print(f"  {name:<16} {m['bytes']:>8} bytes  sha256 {m['sha256'][:16]}  answers {json.dumps(m['answers'])}")
    print(f"wrote {len(manifest)} fixtures and expected.json to {out}")
    return 0


def register(sub: Any) -> None:
    ev = sub.add_parser("eval", help="eval suites (promptfoo-compatible) through the gateway's real route")
    esub = ev.add_subparsers(dest="eval_cmd", metavar="EVAL_COMMAND", required=True)

    run = esub.add_parser("run", help="run a suite (a YAML path or a shipped name: chat-bench, vlm-bench, audio-bench)")
    run.add_argument("suite", help="a suite YAML path, or a shipped suite name (see `forge-tui eval list`)")
    run.add_argument("--url", default=None, help="a running gateway (default: the catalog's gateway address)")
    run.add_argument("--config", default=None, help="catalog; without --url the gateway is started in-process from it")
    run.add_argument("--route", action="append", help="role or model id (repeat to compare routes)")
    run.add_argument("--host", action="append", help="pin to a host or backend (repeat to compare; admin token)")
    run.add_argument("--concurrency", type=int, default=1, help="cases in flight (default 1: sequential)")
    run.add_argument("--repeat", type=int, default=None, help="run every case N times")
    run.add_argument("--timeout", type=float, default=None, help="per-case timeout in seconds (default 120)")
    run.add_argument("--startup-wait", type=float, default=300.0, help="longest wait for a starting backend (s)")
    run.add_argument("-o", "--output", default=None, help="write the results (promptfoo JSON v3, or .md)")
    run.add_argument(
        "--format",
        choices=("json", "md"),
        default=None,
        help="format of -o: promptfoo JSON v3 or Markdown (default: from its suffix)",
    )
    run.add_argument("--admin-token", default=None, help="the gateway's admin token (needed for --host)")
    run.add_argument("--token-file", default=None, help="read the admin token from this file")
    run.add_argument("--api-key", default=None, help="caller API key, if the gateway needs one")
    run.add_argument("--db", default=None, help="history database (default: the catalog's state dir)")
    run.add_argument("--state-dir", default=None, help="state directory holding the history database and admin.token")
    run.add_argument("--no-store", action="store_true", help="do not store the run in the history database")
    run.add_argument("-q", "--quiet", action="store_true", help="no line per case")
    run.set_defaults(handler=lambda a: aio.run(_run(a)))

    ls = esub.add_parser("list", help="shipped suites and stored runs")
    ls.add_argument("--config", default=argparse.SUPPRESS, help="catalog whose state dir holds the runs")
    ls.add_argument("--db", default=None, help="history database (default: the catalog's state dir)")
    ls.add_argument("--state-dir", default=None, help="state directory (default: the catalog's)")
    ls.add_argument("--limit", type=int, default=30, help="newest N stored runs (default 30)")
    ls.set_defaults(handler=_list)

    sh = esub.add_parser("show", help="a stored run (id, unambiguous prefix, or 'latest')")
    sh.add_argument("run", help="run id, an unambiguous prefix of one, or 'latest'")
    sh.add_argument("--config", default=argparse.SUPPRESS, help="catalog whose state dir holds the runs")
    sh.add_argument("--db", default=None, help="history database (default: the catalog's state dir)")
    sh.add_argument("--state-dir", default=None, help="state directory (default: the catalog's)")
    sh.add_argument("-o", "--output", default=None, help="write the run (promptfoo JSON v3, or .md) to this file")
    sh.add_argument(
        "--format",
        choices=("json", "md"),
        default=None,
        help="print or write the run as promptfoo JSON v3 or Markdown (default: a summary table; with -o, from its suffix)",
    )
    sh.set_defaults(handler=_show)

    fx = esub.add_parser("fixtures", help="regenerate the shipped suites' images and clips (and expected.json)")
    fx.add_argument("--out", default=None, help="directory (default: the packaged fixtures)")
    fx.add_argument("--check", action="store_true", help="only compare; exit 1 on any difference")
    fx.set_defaults(handler=_fixtures)
