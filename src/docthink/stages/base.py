"""The stage interface and its one runner.

A stage is what a command that records a run does: a recipe type, a run kind, the files it reads
(hashed as inputs), the folders whose makers are its parent runs, and a function from the recipe to
an `Outcome` (what it wrote, its counts, the lines a person reads). `run_stage` is the only place
that opens a run: it records the exact argv and working directory, hashes inputs and outputs,
writes the output markers the next stage reads, and closes the run with its status. The CLI and
`docthink reproduce` read the same table of stages (`docthink.stages.STAGES`), so every kind of
run can be rerun from its record.

A stage that calls models may also have a `plan`: what a run of that recipe would send and cost,
built from the requests the run would make (`docthink plan`, see `docthink.plan`). A plan records
no run: it sends nothing (a calibration sample is a measurement, not data) and it belongs to the
run it prices, whose folder keeps it and whose data card shows it beside the actual figures.

Stage functions stay plain: they take a validated recipe and call the packages' functions over
typed rows; where the work runs (this process, a cluster) is the business of the executor those
functions use, not of the stage."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from docthink.recipe import Recipe
from docthink.runs import Run, mark_output, parent_runs, start_run

if TYPE_CHECKING:
    from docthink.plan.bill import Plan, PlanOptions

R = TypeVar("R", bound=Recipe)


@dataclass(frozen=True)
class Written:
    """A file or folder a stage read or wrote; `known` holds the digests of its files that the
    stage computed while writing them (relative path -> digest), so they are not read again."""

    path: Path
    known: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    lines: list[str]  # what the command prints; the run id is added to the first
    outputs: list[Written]
    metrics: dict[str, object]
    summary: dict[str, object] = field(default_factory=dict)
    marks: list[Path] = field(default_factory=list)  # folders that name this run as their maker
    inputs: list[Written] = field(default_factory=list)  # inputs hashed while running
    stdout: str = ""  # a machine-readable result the command prints on stdout


def _none(recipe: object) -> Sequence[Path]:
    return ()


def _fine(recipe: object) -> None:
    return None


@dataclass(frozen=True)
class Stage(Generic[R]):
    kind: str  # the run kind in the registry
    command: tuple[str, ...]  # the words after `docthink`
    recipe: type[R]
    run: Callable[[R, Run], Outcome]
    inputs: Callable[[R], Sequence[Path]] = _none  # hashed before the stage runs
    parents: Callable[[R], Sequence[Path]] = _none  # folders whose maker run is a parent
    # how the command takes a recipe file: the `--recipe` option, or its first argument
    recipe_option: bool = True
    # refuses a recipe that cannot run (a UserError) before any run is recorded
    check: Callable[[R], None] = _fine
    # what a run would send and cost, without running it (`docthink plan`); None: no plan
    plan: Callable[[R, PlanOptions], Plan] | None = None

    def argv(self, recipe_file: Path) -> list[str]:
        """The arguments after `docthink` that run this stage from a recipe file alone."""
        return [*self.command, *(["--recipe"] if self.recipe_option else []), str(recipe_file)]


def run_stage(
    stage: Stage[R],
    recipe: R,
    *,
    argv: Sequence[str] | None = None,
    cwd: Path | None = None,
    runs_dir: Path | None = None,
    registry: Path | None = None,
) -> tuple[str, Outcome]:
    """Run `stage` on `recipe` as a recorded run; the run id and what the stage made."""
    stage.check(recipe)
    parents = [run_id for folder in stage.parents(recipe) for run_id in parent_runs(folder)]
    with start_run(stage.kind, recipe, command=list(argv if argv is not None else sys.argv),
                   cwd=cwd or Path.cwd(), runs_dir=runs_dir, registry_path=registry,
                   parents=dict.fromkeys(parents), inputs=stage.inputs(recipe)) as run:
        outcome = stage.run(recipe, run)
        for written in outcome.inputs:
            run.add("input", written.path, written.known)
        for written in outcome.outputs:
            run.add("output", written.path, written.known)
        run.metrics.update(outcome.metrics)
        run.summary.update(outcome.summary)
        for folder in outcome.marks:
            mark_output(folder, run.id, stage.kind)
    return run.id, outcome
