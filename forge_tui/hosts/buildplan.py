"""The commands a rebuild runs on a host, derived from its ``build:`` settings.

Derived commands are argv lists (quoted on the way to the host). A command the operator wrote in
the catalog (``configure:``, ``build:``, ``update:``, ``restart:``) is their shell text and runs as
``sh -c TEXT`` in the source directory.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ..config.models import BuildSettings
from .inventory import expand_home

__all__ = ["BACKEND_FLAGS", "BuildPlan", "make_plan"]

# CMake flags per llama.cpp backend (ggml's option names).
BACKEND_FLAGS: dict[str, tuple[str, ...]] = {
    "hip": ("-DGGML_HIP=ON",),
    "rocm": ("-DGGML_HIP=ON",),
    "cuda": ("-DGGML_CUDA=ON",),
    "metal": ("-DGGML_METAL=ON",),
    "vulkan": ("-DGGML_VULKAN=ON",),
    "cpu": (),
}


@dataclass(frozen=True, slots=True)
class BuildPlan:
    source_dir: str  # absolute on the host
    build_dir: str  # absolute on the host
    binary: str  # absolute path of llama-server after the build
    update: tuple[tuple[str, ...], ...]
    configure: tuple[str, ...]
    build: tuple[str, ...]
    restart: tuple[str, ...] | None
    derived_update: bool

    def backup_dir(self, stamp: str) -> str:
        return f"{self.build_dir}.bak-{stamp}"


def _shell(text: str) -> tuple[str, ...]:
    return ("sh", "-c", text)


def make_plan(b: BuildSettings, home: str, nproc: int) -> BuildPlan:
    """Raises ``ValueError`` with the catalog field to fix when the settings cannot make a build."""
    src = posixpath.normpath(expand_home(b.source_dir, home))
    if not src.startswith("/"):
        raise ValueError(f"build.source_dir must be absolute or start with ~/ (got {b.source_dir!r})")
    build_dir = posixpath.normpath(posixpath.join(src, expand_home(b.build_dir, home)))
    if build_dir in ("/", src, home) or not build_dir.startswith(src + "/"):
        # The build tree is moved and deleted on restore: it must be a subdirectory of the source.
        raise ValueError(f"build.build_dir must be a subdirectory of source_dir (got {b.build_dir!r})")
    binary = posixpath.normpath(posixpath.join(build_dir, b.server_binary))
    rel_build = posixpath.relpath(build_dir, src)

    if b.update:
        update: tuple[tuple[str, ...], ...] = (_shell(b.update),)
    else:
        update = (("git", "fetch", "--tags", "origin", b.ref), ("git", "checkout", "--detach", "FETCH_HEAD"))

    if b.configure:
        configure = _shell(b.configure)
    else:
        backend = b.backend.lower()
        if backend not in BACKEND_FLAGS:
            raise ValueError(f"build.backend {b.backend!r} is not one of {', '.join(sorted(BACKEND_FLAGS))}")
        flags = list(BACKEND_FLAGS[backend])
        if backend in ("hip", "rocm"):
            if not b.gpu_target:
                raise ValueError("build.gpu_target is required for the hip backend (e.g. gfx1151 for Strix Halo)")
            flags.append(f"-DAMDGPU_TARGETS={b.gpu_target}")
        elif backend == "cuda" and b.gpu_target:
            flags.append(f"-DCMAKE_CUDA_ARCHITECTURES={b.gpu_target}")
        configure = ("cmake", "-S", ".", "-B", rel_build, *flags, "-DCMAKE_BUILD_TYPE=Release")

    if b.build:
        build = _shell(b.build)
    else:
        jobs = b.jobs or nproc
        build = ("cmake", "--build", rel_build, "--config", "Release", "-j", str(jobs), "--target", "llama-server")

    return BuildPlan(
        source_dir=src,
        build_dir=build_dir,
        binary=binary,
        update=update,
        configure=configure,
        build=build,
        restart=_shell(b.restart) if b.restart else None,
        derived_update=not b.update,
    )
