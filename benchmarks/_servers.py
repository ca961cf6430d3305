"""Shared by the benchmarks that start zero-latency OpenAI-compatible servers in subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Sequence


def start_servers(
    script: str, port: int, n: int, options: Sequence[str] = ()
) -> list[subprocess.Popen[bytes]]:
    """`n` processes running `script --serve PORT [options]` (they share the port with
    SO_REUSEPORT)."""
    command = [sys.executable, script, "--serve", str(port), *options]
    servers = [subprocess.Popen(command) for _ in range(n)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.5)  # let the other processes bind too
            return servers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("benchmark server did not start")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
