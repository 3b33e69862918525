"""A small CMake C project standing in for the llama.cpp source tree (the real build takes far too
long for CI), in a real git repository with a real ``origin``.

Its ``llama-server`` does what the jobs rely on, the way llama.cpp does it:
- ``--version`` prints ``version: 0.3.0-dev (build N, commit C)`` and ``built with ... for ...``
  to stderr (the 2026 format; N and C come from git at configure time, like llama.cpp's);
- ``-m FILE`` parses the GGUF header (stepping over arrays), looks ``general.architecture`` up in
  its table and fails like llama.cpp's loader: ``unknown model architecture: 'X'`` for an unknown
  one, ``key not found in model: X.context_length`` for a known one without hyperparameters.
The architecture table is per tag: ``v1`` knows llama and gemma3, ``v2`` adds gemma4 (the seed's
missing handler), ``broken`` does not compile.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sshd import Sshd

__all__ = ["CMAKELISTS", "SERVER_C", "FakeLlamaRepo", "lab_catalog_data", "make_repo"]

CMAKELISTS = r"""
cmake_minimum_required(VERSION 3.13)
project(fake_llama C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
execute_process(COMMAND git rev-parse --short=9 HEAD WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                OUTPUT_VARIABLE FORGE_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE)
execute_process(COMMAND git rev-list --count HEAD WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                OUTPUT_VARIABLE FORGE_BUILD OUTPUT_STRIP_TRAILING_WHITESPACE)
add_executable(llama-server server.c)
target_compile_definitions(llama-server PRIVATE BUILD_COMMIT="${FORGE_COMMIT}" BUILD_NUMBER=${FORGE_BUILD}
                           BUILD_COMPILER="${CMAKE_C_COMPILER_ID} ${CMAKE_C_COMPILER_VERSION}"
                           BUILD_TARGET="${CMAKE_SYSTEM_PROCESSOR}-${CMAKE_SYSTEM_NAME}")
"""

SERVER_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef KNOWN_ARCHS
#define KNOWN_ARCHS "@ARCHS@"
#endif

static FILE *f;
static int rd(void *p, size_t n) { return fread(p, 1, n, f) == n; }
static uint64_t u64(void) { uint64_t v = 0; if (!rd(&v, 8)) exit(3); return v; }
static uint32_t u32(void) { uint32_t v = 0; if (!rd(&v, 4)) exit(3); return v; }
static char *str(void) {
    uint64_t n = u64(); char *s = malloc(n + 1); if (!s || !rd(s, n)) exit(3); s[n] = 0; return s;
}
static const int fixed[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static void skip(uint32_t t) {
    if (t == 8) { free(str()); return; }
    if (t == 9) { uint32_t it = u32(); uint64_t n = u64(); for (uint64_t i = 0; i < n; i++) skip(it); return; }
    if (t > 12) { fprintf(stderr, "gguf: bad type %u\n", t); exit(3); }
    fseek(f, fixed[t], SEEK_CUR);
}
static int known(const char *a) {
    char buf[256]; snprintf(buf, sizeof buf, ",%s,", KNOWN_ARCHS);
    char pat[128]; snprintf(pat, sizeof pat, ",%s,", a);
    return strstr(buf, pat) != NULL;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--version")) {
            fprintf(stderr, "version: 0.3.0-dev (build %d, commit %s)\n", BUILD_NUMBER, BUILD_COMMIT);
            fprintf(stderr, "built with %s for %s\n", BUILD_COMPILER, BUILD_TARGET);
            return 0;
        }
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
    }
    if (!model) { fprintf(stderr, "error: -m is required\n"); return 2; }
    fprintf(stderr, "llama_model_loader: loading model from %s\n", model);
    f = fopen(model, "rb");
    if (!f) { fprintf(stderr, "gguf_init_from_file: failed to open '%s'\n", model); return 1; }
    char magic[4];
    if (!rd(magic, 4) || memcmp(magic, "GGUF", 4)) { fprintf(stderr, "gguf: invalid magic\n"); return 1; }
    u32(); u64();
    uint64_t nkv = u64();
    char *arch = NULL; int has_ctx = 0;
    char want[160] = "";
    for (uint64_t i = 0; i < nkv; i++) {
        char *k = str(); uint32_t t = u32();
        if (!strcmp(k, "general.architecture") && t == 8) {
            arch = str();
            snprintf(want, sizeof want, "%s.context_length", arch);
        } else {
            if (want[0] && !strcmp(k, want)) has_ctx = 1;
            skip(t);
        }
        free(k);
    }
    if (!arch) { fprintf(stderr, "llama_model_load: error loading model: no general.architecture\n"); return 1; }
    if (!known(arch)) {
        fprintf(stderr, "llama_model_load: error loading model: error loading model architecture: "
                        "unknown model architecture: '%s'\n", arch);
        return 1;
    }
    if (!has_ctx) {
        fprintf(stderr, "llama_model_load: error loading model: error loading model hyperparameters: "
                        "key not found in model: %s.context_length\n", arch);
        return 1;
    }
    fprintf(stderr, "llama_model_loader: %s hyperparameters loaded (no server in this stand-in)\n", arch);
    return 0;
}
"""


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "forge",
            "GIT_AUTHOR_EMAIL": "forge@test",
            "GIT_COMMITTER_NAME": "forge",
            "GIT_COMMITTER_EMAIL": "forge@test",
            "HOME": str(cwd),
            "PATH": "/usr/bin:/bin",
        },
    )
    return out.stdout.strip()


@dataclass
class FakeLlamaRepo:
    origin: Path  # bare repository (the "upstream")
    source: Path  # the host's checkout (build.source_dir), at v1 and built
    commits: dict[str, str]  # tag -> full sha

    def binary(self) -> Path:
        return self.source / "build" / "bin" / "llama-server"


def make_repo(root: Path, *, build: bool = True) -> FakeLlamaRepo:
    """origin.git with tags v1, v2, broken; ``source`` cloned at v1 and (optionally) built with the
    same cmake commands the job derives for a ``cpu`` backend."""
    author = root / "author"
    author.mkdir(parents=True)
    _git(author, "init", "-q", "-b", "master")
    (author / "CMakeLists.txt").write_text(CMAKELISTS)
    commits = {}
    for tag, archs, extra in (
        ("v1", "llama,gemma3", ""),
        ("v2", "llama,gemma3,gemma4", ""),
        ("broken", "llama,gemma3,gemma4", "this is not C;\n"),
    ):
        (author / "server.c").write_text(SERVER_C.replace("@ARCHS@", archs) + extra)
        _git(author, "add", "-A")
        _git(author, "commit", "-q", "-m", f"fake llama.cpp {tag}")
        _git(author, "tag", tag)
        commits[tag] = _git(author, "rev-parse", "HEAD")
    origin = root / "origin.git"
    _git(root, "clone", "-q", "--bare", str(author), str(origin))
    source = root / "src" / "llama.cpp"
    source.parent.mkdir(parents=True)
    _git(root, "clone", "-q", str(origin), str(source))
    _git(source, "checkout", "-q", "--detach", "v1")
    repo = FakeLlamaRepo(origin, source, commits)
    if build:
        subprocess.run(
            ["cmake", "-S", ".", "-B", "build", "-DCMAKE_BUILD_TYPE=Release"],
            cwd=source,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["cmake", "--build", "build", "--config", "Release", "-j", "2", "--target", "llama-server"],
            cwd=source,
            check=True,
            capture_output=True,
        )
    return repo


def lab_catalog_data(
    s: Sshd,
    repo: FakeLlamaRepo | None,
    models_dir: Path,
    llama_url: str,
    restart_log: Path,
    *,
    ref: str = "v2",
    build: str | None = None,
    extra_models: dict[str, Any] | None = None,
    roles: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One host ``box`` reached over the real ``s`` with build settings for ``repo``; its backend is
    the real llama.cpp server at ``llama_url``. ``models_dir`` is laid out by
    ``gguf_files.lab_models_dir``. The restart command logs the binary it finds to ``restart_log``.
    Without a ``repo`` the host has no build settings (probes only)."""
    models: dict[str, Any] = {
        "gemma3-chat": {
            "family": "gemma3",
            "architecture": "gemma3",
            "gguf": str(models_dir / "gemma-3-270m.gguf"),
            "capabilities": ["chat"],
            "memory_gb": 0.4,
            "state": "hot",
            "placements": [{"backend": "box-llama"}],
        },
        "gemma4-chat": {
            "family": "gemma3",
            "architecture": "gemma4",
            "gguf": str(models_dir / "gemma-4-tiny.gguf"),
            "capabilities": ["chat"],
            "memory_gb": 0.1,
            "state": "on-demand",
            "placements": [{"backend": "box-llama"}],
        },
    }
    models.update(extra_models or {})
    data: dict[str, Any] = {
        "hosts": {
            "box": {
                "address": s.address,
                "platform": "cpu",
                "memory_budget_gb": 8,
                "model_dirs": [str(models_dir)],
                "ssh": {
                    "user": s.user,
                    "port": s.port,
                    "key_file": str(s.client_key),
                    "known_hosts": str(s.known_hosts),
                    "connect_timeout_s": 5,
                    "command_timeout_s": 30,
                },
            }
        },
        "backends": {
            "box-llama": {"host": "box", "kind": "llama-server", "base_url": llama_url, "warmup_timeout_s": 30}
        },
        "families": {"gemma3": {}},
        "models": models,
        "roles": roles or {"default-chat": {"model": "gemma3-chat"}},
    }
    if repo is not None:
        build_cfg: dict[str, Any] = {
            "source_dir": str(repo.source),
            "ref": ref,
            "backend": "cpu",
            "restart": f"build/bin/llama-server --version 2>> {restart_log}",
        }
        if build:
            build_cfg["build"] = build
        data["hosts"]["box"]["build"] = build_cfg
    if gateway is not None:
        data["gateway"] = gateway
    return data
