"""``forge-tui preflight``, ``forge-tui job rebuild|verify`` and ``forge-tui hosts probe|inventory``.

``register(sub)`` adds the subcommands to the main parser; each handler returns the exit code:
preflight 1 when blocked, job 1 unless it succeeded (130 when cancelled with Ctrl-C, after the
restore), hosts probe 1 when a host is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from .. import aio
from ..config import Catalog
from ..hosts.gguf import GgufError
from ..hosts.service import HostProbe, HostsService
from ..hosts.transport import TransportError
from ..schema import JobInfo, PreflightResult
from ..state import RoutingState
from .common import CONFIG_HELP, load_config, state_dir

__all__ = ["cmd_hosts", "cmd_job", "cmd_preflight", "preflight_lines", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "preflight",
        help="check a role change: weights on the host, architecture known to its "
        "build, memory budget (exit 1 when blocked)",
    )
    p.add_argument("role", help="the role to change, e.g. default-chat")
    p.add_argument("model", help="the catalog model id it would route to")
    p.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    p.set_defaults(handler=cmd_preflight)

    j = sub.add_parser("job", help="rebuild or verify a host's llama.cpp serving build (exit 1 unless it succeeded)")
    j.add_argument(
        "kind",
        choices=["rebuild", "verify"],
        help="rebuild: backup, build, verify, restart, smoke (restores on failure); verify: architecture check and smoke",
    )
    j.add_argument("host", help="catalog host name")
    j.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    j.add_argument(
        "--gateway-url", default=None, help="gateway to smoke through (default: the config's gateway, if it answers)"
    )
    j.set_defaults(handler=cmd_job)

    h = sub.add_parser("hosts", help="probe hosts over SSH / list their GGUF files")
    h.add_argument(
        "action", choices=["probe", "inventory"], help="probe: reachability, memory, serving version; inventory: GGUFs"
    )
    h.add_argument("names", nargs="*", help="hosts (default: all)")
    h.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
    h.set_defaults(handler=cmd_hosts)


# ------------------------------------------------------------------ preflight
def cmd_preflight(args: argparse.Namespace) -> int:
    path, catalog = load_config(args)
    state = RoutingState(catalog, state_dir(args, path, catalog))
    return aio.run(_preflight(catalog, state, args.role, args.model))


async def _preflight(catalog: Catalog, state: RoutingState, role: str, model: str) -> int:
    svc = HostsService(catalog, state_dir=None, state=state)
    try:
        res = await svc.preflight(role, model, state)
    finally:
        await svc.close()
    print(f"preflight {role} -> {model}" + (f" on {res.host}" if res.host else ""))
    for line in preflight_lines(res):
        print(line)
    return 1 if res.blocked else 0


def preflight_lines(res: PreflightResult) -> list[str]:
    """The checks, then what could not be checked and how to fix each, then the verdict."""
    out = []
    for c in res.checks:
        out.append(f"  {c.outcome.upper():<8}  {c.name:<13} {c.evidence}")
        if c.fix and c.outcome in ("fail", "unproven"):
            out.append(f"  {'':<8}  {'':<13} fix: {c.fix}")
    fails = [c for c in res.checks if c.outcome == "fail"]
    unproven = [c for c in res.checks if c.outcome == "unproven"]
    warns = sum(c.outcome == "warn" for c in res.checks)
    if unproven:
        out.append(
            f"could not check {len(unproven)}: {', '.join(c.name for c in unproven)} "
            "(a check that cannot be made blocks like a failure)"
        )
    if fails or unproven:
        what = []
        if fails:
            what.append(f"{len(fails)} check(s) failed")
        if unproven:
            what.append(f"{len(unproven)} could not be checked")
        out.append(f"blocked: {' and '.join(what)} (the console can force the swap; the force is audited)")
    else:
        out.append("ok" + (f" with {warns} warning(s)" if warns else ""))
    return out


# ------------------------------------------------------------------ job
def cmd_job(args: argparse.Namespace) -> int:
    path, catalog = load_config(args)
    sdir = state_dir(args, path, catalog)
    state = RoutingState(catalog, sdir)
    return aio.run(_job(catalog, state, sdir, args.kind, args.host, args.gateway_url))


async def _gateway(catalog: Catalog, explicit: str | None) -> str | None:
    if explicit:
        return explicit.rstrip("/")
    g = catalog.gateway
    url = f"http://{g.host}:{g.port}"
    try:
        async with httpx.AsyncClient(timeout=2.0) as c:
            r = await c.get(url + "/health")
        return url if r.status_code < 500 else None
    except httpx.HTTPError:
        return None


async def _job(
    catalog: Catalog, state: RoutingState, state_dir: Path, kind: str, host: str, gateway_url: str | None
) -> int:
    url = await _gateway(catalog, gateway_url)
    if url is None:
        print(
            "forge-tui: no gateway answers at the configured address: smoke steps will be skipped "
            "(start `forge-tui serve` or pass --gateway-url)",
            file=sys.stderr,
        )
    svc = HostsService(catalog, state_dir=state_dir, state=state, gateway_url=lambda: url)
    try:
        try:
            info = svc.start_job(kind, host)
        except ValueError as exc:
            print(f"forge-tui: {exc}", file=sys.stderr)
            return 2
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        seen = 0
        cancel: asyncio.Task[JobInfo] | None = None  # kept referenced until the loop ends
        while True:
            for line in svc.job_log(info.id, seen):
                print(line, flush=True)
                seen += 1
            info = next(j for j in svc.jobs() if j.id == info.id)
            if info.state != "running":
                break
            if interrupted.is_set() and cancel is None:
                print("forge-tui: cancelling (the backup is restored first)...", file=sys.stderr, flush=True)
                cancel = loop.create_task(svc.cancel_job(info.id))
            await asyncio.sleep(0.2)
        for line in svc.job_log(info.id, seen):
            print(line)
        loop.remove_signal_handler(signal.SIGINT)
        print()
        for s in svc.job_steps(info.id):
            dur = s.get("duration_s")
            print(
                f"  {s['state']!s:<9} {s['name']!s:<14} {'' if dur is None else f'{dur:7.1f}s'}  {s.get('detail') or ''}"
            )
        print(f"job {info.id}: {info.state}" + (f": {info.error}" if info.error else ""))
        if info.state == "cancelled":
            return 130
        return 0 if info.state == "succeeded" else 1
    finally:
        await svc.close()


# ------------------------------------------------------------------ hosts
def cmd_hosts(args: argparse.Namespace) -> int:
    _path, catalog = load_config(args)
    unknown = [n for n in args.names if n not in catalog.hosts]
    if unknown:
        print(
            f"forge-tui: unknown host(s) {', '.join(unknown)} (hosts: {', '.join(sorted(catalog.hosts))})",
            file=sys.stderr,
        )
        return 2
    names = args.names or list(catalog.hosts)
    if args.action == "inventory":
        return aio.run(_inventory(catalog, names))
    return aio.run(_probe(catalog, names))


def probe_table(probes: list[HostProbe]) -> list[str]:
    rows = [("HOST", "REACH", "MEMORY", "SOURCE", "SERVING", "NOTE")]
    for p in probes:
        reach = {True: "up", False: "DOWN", None: "?"}[p.reachable]
        mem = (
            f"{p.memory_used_gb:.1f}/{p.memory_total_gb:.1f} GB"
            if p.memory_used_gb is not None and p.memory_total_gb is not None
            else "-"
        )
        note = (
            p.error
            or (f"pressure {p.pressure}" if p.pressure else "")
            or ", ".join(f"{b}: {', '.join(m)}" for b, m in p.loaded_models.items())
        )
        rows.append((p.host, reach, mem, p.memory_source or "-", p.serving_version or "-", note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]


async def _probe(catalog: Catalog, names: list[str]) -> int:
    svc = HostsService(catalog, state_dir=None)
    try:
        probes = list(await asyncio.gather(*(svc.probe_now(n) for n in names)))
    finally:
        await svc.close()
    for line in probe_table(probes):
        print(line.rstrip())
    for p in probes:
        for g in p.gpus:
            used = f"{g.used / 2**30:.1f}" if g.used is not None else "?"
            total = f"{g.ceiling / 2**30:.1f}" if g.ceiling is not None else "?"
            kind = "unified" if g.unified else "vram"
            print(
                f"  {p.host} gpu{g.index}{'' if g.parent is None else f' (of gpu{g.parent})'}: "
                f"{g.name or '?'} {used}/{total} GiB {kind} [{g.source}]" + (f" {g.gfx_target}" if g.gfx_target else "")
            )
    return 0 if all(p.reachable for p in probes) else 1


async def _inventory(catalog: Catalog, names: list[str]) -> int:
    svc = HostsService(catalog, state_dir=None)
    code = 0
    try:
        for n in names:
            try:
                files = await svc.refresh_inventory(n)
            except (TransportError, GgufError) as exc:  # report per host and go on with the others
                print(f"{n}: {exc}")
                code = 1
                continue
            print(f"{n}: {len(files)} GGUF file(s)")
            for f in files:
                arch = f.architecture or f"unreadable: {f.error}"
                print(f"  {f.size_gb:8.2f} GB  {arch:<14} {f.path}")
            for d in svc.missing_model_dirs(n):
                print(f"  missing directory: {d}")
    finally:
        await svc.close()
    return code
