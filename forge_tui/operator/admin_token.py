"""The admin API's per-run token: generated when none is configured, kept in a 0600 file.

The admin API always requires a token, so a web page in a local browser cannot drive it
(CSRF). When the operator configured none, the gateway makes one per run and writes it to
``<state_dir>/admin.token`` (owner read/write only, written atomically) for
``forge-tui attach --token-file``.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["TOKEN_FILE_NAME", "new_token", "read_token_file", "remove_token_file", "write_token_file"]

TOKEN_FILE_NAME = "admin.token"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` with mode 0600: temp file in the same directory, fsync, rename.

    The temp file is created 0600 from the start (never readable by others, even briefly).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def remove_token_file(path: Path, token: str) -> None:
    """Remove the file if it still holds ``token`` (another gateway may have replaced it since)."""
    try:
        if path.read_text(encoding="utf-8").strip() == token:
            path.unlink()
    except OSError:
        pass


def read_token_file(path: str | Path) -> str:
    """The token in ``path``; ``ValueError`` (with a message for the operator) when unusable."""
    p = Path(path).expanduser()
    try:
        token = p.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"admin token file {p} does not exist (is the gateway running with that state dir?)") from None
    except OSError as exc:
        raise ValueError(f"cannot read admin token file {p}: {exc.strerror or exc}") from None
    if not token:
        raise ValueError(f"admin token file {p} is empty")
    return token
