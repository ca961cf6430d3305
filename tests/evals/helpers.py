"""Shared test helpers: the benchmark data in ../shared, the OpenAI test server, the CLI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mmlongbench"
SAMPLES = SHARED / "samples.json"
DOCUMENTS = SHARED / "documents"
NO_SHARED_DATA = f"MMLongBench-Doc data not found at {SHARED} (shared_data tests need it)"
SHARED_V2 = SHARED.parent / "mmlongbench-v2"
SAMPLES_V2 = SHARED_V2 / "samples.json"
NO_SHARED_V2 = (f"MMLongBench-Doc-V2 data (samples.json, question_types.json, corrections_diff.json) "
                f"or V1's PDFs not found at {SHARED_V2} and {DOCUMENTS} (shared_data tests need "
                "them)")


def openai_server() -> ModuleType:
    """tests/models/openai_server.py, imported by the bare name its own tests use (tests/models
    has no __init__.py and is on sys.path only while pytest collects it), so both share one module
    object whichever imports it first."""
    if "openai_server" in sys.modules:
        return sys.modules["openai_server"]
    path = Path(__file__).resolve().parents[1] / "models" / "openai_server.py"
    spec = importlib.util.spec_from_file_location("openai_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["openai_server"] = module
    spec.loader.exec_module(module)
    return module



def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
