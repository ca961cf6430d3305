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
