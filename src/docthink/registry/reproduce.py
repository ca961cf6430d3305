"""`docthink reproduce RUN`: the exact command that reruns a recorded run from its resolved
recipe at its recorded commit; with `--run`, run it and compare the new outputs' hashes with the
recorded ones.

Every stage reruns the same way, from the stage table (`docthink.stages.STAGES`): `docthink
COMMAND --recipe FILE`. The rerun writes its outputs to a new folder (the recipe's `out` / `outs`
are redirected there), so the recorded outputs stay as they are. Relative paths in the recipe are
resolved against the directory the run was started in, which the record holds; for runs recorded
before it did, it is read back from the recorded artifacts (a relative `out: demo/export` and an
artifact `/work/demo/export/train.parquet` give `/work`), and the plan says so. When the
recorded commit is not the current checkout's, the rerun uses the source of that commit, checked
out in a temporary clone that shares the checkout's objects (`git clone --shared`): nothing is
registered in, or written to, the user's checkout, even if the rerun is killed.

Printing the plan writes nothing: the printed lines carry the recipe (a here-document), so they
are a script that reruns the run. A rerun whose inputs are gone is refused before it starts.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from docthink.core.errors import UserError
from docthink.runs.registry import Artifact, Registry, RunFilter, RunRecord
from docthink.runs.run import artifact_digest, code_version

# Recipe fields that hold paths: where the original working directory can be read back from.
PATH_FIELDS = ("out", "outs", "run_dir", "corpus", "questions", "data", "documents", "pdf_dir",
               "base", "tuned", "predictions")
OUTPUT_FIELDS = ("out", "outs")
# Recipe fields that are always local paths read by the run (`base` and `tuned` may be hub ids).
INPUT_FIELDS = ("run_dir", "corpus", "questions", "data", "documents", "pdf_dir", "predictions")
HEREDOC = "DOCTHINK_RECIPE"


class ReproduceError(UserError, RuntimeError):
    """A run that cannot be reproduced as asked; the message says why."""


def _s(value: object) -> str:
    return str(value)


# Runs recorded before the stage table (their records have no working directory) were made by
# code whose ingest, export and merge commands did not take a recipe file alone: at their commit
# they rerun with these arguments.
Builder = Callable[[dict[str, Any], Path], list[str]]
LEGACY: dict[str, Builder] = {
    "ingest": lambda r, f: ["ingest", _s(r["pdf_dir"]), "--out", _s(r["out"]), "--recipe", str(f)],
    "export": lambda r, f: ["export", _s(r["run_dir"]), "--format", _s(r["format"]),
                            "--out", _s(r["out"])],
    "merge": lambda r, f: ["merge", "--base", _s(r["base"]), "--tuned", _s(r["tuned"]),
                           "--alpha", ",".join(f"{a!r}" for a in r["alphas"]),
                           *(x for o in r["outs"] for x in ("--out", _s(o))),
                           "--recipe", str(f)],
}


@dataclass(frozen=True)
class Plan:
    record: RunRecord
    cwd: Path  # where the run was started: relative recipe paths resolve against it
    target: Path  # the rerun's outputs go under it
    recipe_file: Path
    recipe: dict[str, object]  # the recorded recipe, outputs redirected
    argv: list[str]  # after `docthink`
    outputs: dict[str, str]  # recorded output path -> where the rerun writes it
    head: str | None  # the current checkout's commit
    repo: Path | None  # the git checkout docthink runs from
    gone: list[str]  # inputs (recorded, or named by the recipe) that no longer exist
    cwd_inferred: bool  # the record predates recorded working directories

    @property
    def same_commit(self) -> bool:
        return self.record.git_commit is not None and self.record.git_commit == self.head

    def require_inputs(self) -> None:
        if self.gone:
            more = f" (and {len(self.gone) - 1} more)" if len(self.gone) > 1 else ""
            raise ReproduceError(f"run {self.record.id} cannot be rerun: its input {self.gone[0]} "
                                 f"is gone{more}; restore it first")

    def describe(self) -> list[str]:
        r = self.record
        state = {None: "dirty flag unknown", True: "with uncommitted changes", False: "clean"}
        inferred = " (inferred from its artifact paths)" if self.cwd_inferred else ""
        lines = [(f"# run {r.id} ({r.kind}, {r.status}) at commit {r.git_commit} "
                 f"({state[r.git_dirty]}), started in {self.cwd}{inferred}"),
                 f"# outputs redirected under {self.target}"]
        if r.git_dirty:
            lines.append("# warning: the run's code had uncommitted changes, which no commit holds")
        lines += [f"# warning: input {path} is gone: restore it before rerunning" for path in self.gone]
        lines.append(f"cd {shlex.quote(str(self.cwd))}")
        if self.same_commit:
            lines.append(f"# the current checkout is at {r.git_commit}: no checkout needed")
        else:
            lines.append(f"git checkout {r.git_commit}")
        if str(self.recipe_file) in self.argv:
            lines += [f"mkdir -p {shlex.quote(str(self.target))}",
                      f"cat > {shlex.quote(str(self.recipe_file))} <<'{HEREDOC}'",
                      recipe_yaml(self.recipe).rstrip("\n"), HEREDOC]
        lines.append(shlex.join(["docthink", *self.argv]))
        if not self.same_commit:
            lines.append("git checkout -  # back to where you were")
        return lines


def recipe_yaml(recipe: dict[str, object]) -> str:
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)


def _relative_fields(recipe: dict[str, object]) -> list[str]:
    values: list[str] = []
    for name in PATH_FIELDS:
        value = recipe.get(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and not item.startswith("/"):
                values.append(item.removeprefix("./").rstrip("/"))
    return values


def started_in(record: RunRecord) -> Path | None:
    """The directory the run was started in, from a relative recipe path and the absolute
    artifact path it became; None when the recipe has no relative path (then it does not
    matter)."""
    relative = _relative_fields(record.recipe)
    if not relative:
        return None
    for value in relative:
        for artifact in record.artifacts:
            for candidate in (artifact.path, str(Path(artifact.path).parent)):
                if candidate.endswith("/" + value):
                    return Path(candidate.removesuffix("/" + value))
                index = candidate.find("/" + value + "/")
                if index >= 0:
                    return Path(candidate[:index])
    raise ReproduceError(
        f"run {record.id}: cannot tell which directory it was started in (its recipe has relative "
        f"paths {relative} that no recorded artifact ends with); pass --cwd"
    )


def _redirect(recipe: dict[str, object], cwd: Path, target: Path) -> tuple[dict[str, object], dict[str, str]]:
    """The recipe with `out` / `outs` under `target`, and old absolute path -> new path."""
    redirected = dict(recipe)
    moved: dict[str, str] = {}
    for name in OUTPUT_FIELDS:
        value = recipe.get(name)
        if value is None:
            continue
        olds = value if isinstance(value, list) else [value]
        news = []
        for i, old in enumerate(olds):
            old_abs = (cwd / str(old)).resolve()
            new = (target / (f"{i}-{old_abs.name}" if isinstance(value, list) else old_abs.name))
            moved[str(old_abs)] = str(new.resolve())
            news.append(str(new.resolve()))
        redirected[name] = news if isinstance(value, list) else news[0]
    return redirected, moved


def _new_path(path: str, moved: dict[str, str]) -> str | None:
    for old, new in moved.items():
        if path == old:
            return new
        if path.startswith(old + "/"):
            return new + path[len(old):]
    return None


def plan(record: RunRecord, target: Path, cwd: Path | None = None) -> Plan:
    from docthink.stages import STAGES

    if record.kind not in STAGES:
        raise ReproduceError(f"run {record.id}: no stage reruns a {record.kind!r} run "
                             f"(known: {', '.join(STAGES)})")
    if record.git_commit is None:
        raise ReproduceError(f"run {record.id}: no git commit was recorded (it ran outside a "
                             "checkout), so its code cannot be checked out")
    inferred = cwd is None and record.cwd is None
    origin = cwd or (Path(record.cwd) if record.cwd is not None else started_in(record)) or \
        Path.cwd()
    target = target.resolve()
    recipe, moved = _redirect(record.recipe, origin, target)
    outputs = {a.path: new for a in record.outputs() if (new := _new_path(a.path, moved))}
    recipe_file = target / f"recipe-{record.id}.yaml"
    legacy = LEGACY.get(record.kind) if record.cwd is None else None
    rerun_args = legacy(recipe, recipe_file) if legacy else STAGES[record.kind].argv(recipe_file)
    # The rerun records into its own registry: code at an older commit may not know this
    # registry's newer schema.
    argv = [*rerun_args, "--runs-dir", str(target / "runs"),
            "--registry", str(target / "registry.sqlite")]
    head, _ = code_version()
    return Plan(record, origin, target, recipe_file, recipe, argv, outputs, head, _repo(),
                _gone_inputs(record, origin), inferred)


def _gone_inputs(record: RunRecord, cwd: Path) -> list[str]:
    recorded = [a.path for a in record.artifacts if a.role == "input"]
    named = [str(cwd / value) for name in INPUT_FIELDS
             if isinstance(value := record.recipe.get(name), str) and value]
    return [p for p in dict.fromkeys([*recorded, *named]) if not Path(p).exists()]


def _repo() -> Path | None:
    here = Path(__file__).resolve().parent
    top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True, check=False)
    return Path(top.stdout.strip()) if top.returncode == 0 else None


@dataclass(frozen=True)
class Comparison:
    recorded: Artifact
    path: str  # where the rerun wrote it
    now: Artifact | None  # None: the rerun did not write it
    status: str  # same | different | missing


@dataclass(frozen=True)
class Outcome:
    run_id: str
    comparisons: list[Comparison]

    @property
    def identical(self) -> bool:
        return bool(self.comparisons) and all(c.status == "same" for c in self.comparisons)

    def summary(self) -> str:
        counts = {s: sum(c.status == s for c in self.comparisons) for s in ("same", "different", "missing")}
        verdict = "identical outputs" if self.identical else "outputs differ"
        return f"{verdict}: {counts['same']} same, {counts['different']} different, {counts['missing']} missing"


def rerun(steps: Plan, registry: Registry) -> Outcome:
    """Run the plan and compare hashes. The rerun is recorded in its own registry under the
    target folder; the reproduced run gets a note with the verdict in `registry`."""
    steps.require_inputs()
    if steps.target.exists() and any(steps.target.iterdir()):
        raise ReproduceError(f"{steps.target} exists and is not empty; pass another --out")
    steps.target.mkdir(parents=True, exist_ok=True)
    steps.recipe_file.write_text(recipe_yaml(steps.recipe), encoding="utf-8")
    if steps.same_commit:
        _run(steps, env_src=None)
    else:
        _in_clone(steps)
    with Registry(steps.target / "registry.sqlite") as own:
        (new,) = own.find(RunFilter(), limit=None)
    if new.status != "ok":
        raise ReproduceError(f"the rerun {new.id} ended {new.status}: {new.error}")
    outcome = Outcome(new.id, _compare(steps, new))
    registry.add_note(steps.record.id, f"reproduced by run {new.id} (registry "
                      f"{steps.target / 'registry.sqlite'}): {outcome.summary()}",
                      author="docthink reproduce")
    return outcome


def _run(steps: Plan, env_src: Path | None) -> None:
    env = dict(os.environ)
    if env_src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(env_src), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, "-m", "docthink.cli", *steps.argv], cwd=steps.cwd,
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReproduceError(f"the rerun failed (exit {done.returncode}):\n"
                             f"{done.stdout[-2000:]}{done.stderr[-4000:]}")


def _in_clone(steps: Plan) -> None:
    """Run at the recorded commit from a temporary clone: `--shared` borrows the checkout's
    objects (no copy) and registers nothing in it, unlike `git worktree add`."""
    if steps.repo is None:
        raise ReproduceError("docthink is not running from a git checkout, so commit "
                             f"{steps.record.git_commit} cannot be checked out")
    with tempfile.TemporaryDirectory(prefix="docthink-reproduce-") as tmp:
        tree = Path(tmp) / "tree"
        for args in (["clone", "--quiet", "--shared", "--no-checkout", str(steps.repo), str(tree)],
                     ["-C", str(tree), "checkout", "--quiet", "--detach",
                      str(steps.record.git_commit)]):
            done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ReproduceError(f"checking out commit {steps.record.git_commit} in a "
                                     f"temporary clone: {done.stderr.strip()}")
        _run(steps, env_src=tree / "src")


def _compare(steps: Plan, new: RunRecord) -> list[Comparison]:
    written = {a.path: a for a in new.outputs()}
    comparisons = []
    for recorded in steps.record.outputs():
        path = steps.outputs.get(recorded.path)
        if path is None:
            comparisons.append(Comparison(recorded, "", None, "missing"))
            continue
        now = written.get(path)
        # a record older than blake3 is compared with the output hashed as it was (sha256)
        if (now is None or now.algorithm != recorded.algorithm) and Path(path).exists():
            digest, size = artifact_digest(Path(path), recorded.algorithm)
            now = Artifact("output", path, digest, size, recorded.algorithm)
        status = "missing" if now is None else "same" if now.digest == recorded.digest else "different"
        comparisons.append(Comparison(recorded, path, now, status))
    return comparisons
