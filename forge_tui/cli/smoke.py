"""``forge-tui smoke``: a role-appropriate request per role through a running gateway."""

from __future__ import annotations

import argparse
from typing import Any

from .. import aio
from ..config import load_catalog
from .common import fail

__all__ = ["register"]


async def _smoke(args: argparse.Namespace) -> int:
    import httpx

    from ..config.models import ROLE_REQUIRES, Capability
    from ..health import answers_as
    from ..smoke import smoke_roles

    url = args.url.rstrip("/")
    roles: list[Any] = []
    known_as = None
    if args.config:
        catalog = load_catalog(args.config)
        state_roles = catalog.roles
        known_as = answers_as(catalog)  # an answer from another model than the routed one fails
        wanted = args.roles or list(state_roles)
        for name in wanted:
            if name not in state_roles:
                return fail(f"unknown role {name!r} in {args.config} (roles: {', '.join(state_roles)})")
            roles.append(argparse.Namespace(name=name, requires=list(state_roles[name].required(name))))
    else:
        names = list(args.roles)
        if not names:
            try:
                async with httpx.AsyncClient(timeout=10) as c:
                    data = (await c.get(url + "/v1/models")).json()["data"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                return fail(f"cannot list roles from {url}/v1/models: {exc}")
            names = [d["id"] for d in data if isinstance(d, dict) and d.get("forge", {}).get("kind") == "role"]
        for name in names:
            roles.append(argparse.Namespace(name=name, requires=list(ROLE_REQUIRES.get(name, (Capability.CHAT,)))))
    if not roles:
        return fail("no roles to smoke")
    results = await smoke_roles(url, roles, api_key=args.api_key, timeout=args.timeout, known_as=known_as)
    for r in results:
        print(r.line())
        if r.snippet:
            print(f"      {r.snippet}")
    failed = sum(1 for r in results if not r.ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def register(sub: Any) -> None:
    sm = sub.add_parser("smoke", help="smoke roles through a running gateway; exit 1 on any failure")
    sm.add_argument("roles", nargs="*", help="roles to smoke (default: every role)")
    sm.add_argument("--url", default="http://127.0.0.1:8600", help="gateway base URL (default: %(default)s)")
    sm.add_argument("--config", default=None, help="learn the roles from this catalog instead of /v1/models")
    sm.add_argument("--api-key", default=None, help="caller API key, if the gateway requires one")
    sm.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for each role's answer (default: %(default)s)"
    )
    sm.set_defaults(handler=lambda args: aio.run(_smoke(args)))
