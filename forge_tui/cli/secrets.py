"""Caller keys and tokens from files and environment variables, so they never show in ``ps``.

    --api-key-file PATH       one caller key per line (blank lines and ``#`` comments skipped)
    $FORGE_API_KEYS           comma-separated caller keys (gateway.api_keys_env)
    --admin-token-file PATH   the admin token ($FORGE_ADMIN_TOKEN also works)
    --metrics-token-file PATH a token that may read /health and /metrics only ($FORGE_METRICS_TOKEN)

A secret file must be private (no group/other permission bits, e.g. 0600), as ssh insists for keys.
"""

from __future__ import annotations

import argparse
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..config import Catalog

__all__ = ["Exposure", "SecretFileError", "exposure", "read_secret_file"]


class SecretFileError(ValueError):
    """A secret file is missing, unreadable or readable by others (the message says which and how to fix)."""


def read_secret_file(path: str | Path) -> list[str]:
    p = Path(path).expanduser()
    try:
        st = p.stat()
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretFileError(f"cannot read {p}: {exc.strerror or exc}") from None
    if st.st_mode & 0o077:
        raise SecretFileError(
            f"{p} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {p}` and start again"
        )
    out = [ln.strip() for ln in text.splitlines()]
    return [ln for ln in out if ln and not ln.startswith("#")]


@dataclass(frozen=True)
class Exposure:
    catalog: Catalog
    api_keys: tuple[str, ...]
    admin_token: str | None


def exposure(args: argparse.Namespace, catalog: Catalog) -> Exposure:
    """Resolve keys and tokens from flags, files and env vars; fold the exposure flags into the catalog."""
    g = catalog.gateway
    keys: list[str] = list(getattr(args, "api_key", None) or ())
    key_file = getattr(args, "api_key_file", None)
    if key_file:
        found = read_secret_file(key_file)
        if not found:
            raise SecretFileError(f"{key_file} holds no key (one per line)")
        keys += found
    env = os.environ.get(g.api_keys_env) if g.api_keys_env else None
    if env:
        keys += [k.strip() for k in env.split(",") if k.strip()]
    admin = getattr(args, "admin_token", None)
    admin_file = getattr(args, "admin_token_file", None)
    if not admin and admin_file:
        found = read_secret_file(admin_file)
        admin = found[0] if found else None
    update: dict[str, object] = {}
    metrics_file = getattr(args, "metrics_token_file", None)
    if metrics_file:
        found = read_secret_file(metrics_file)
        if found:
            update["metrics_token"] = found[0]
    if getattr(args, "allow_unauthenticated", False):
        update["allow_unauthenticated"] = True
    if update:
        catalog = catalog.model_copy(update={"gateway": g.model_copy(update=update)})
    return Exposure(catalog, tuple(dict.fromkeys(keys)), admin)
