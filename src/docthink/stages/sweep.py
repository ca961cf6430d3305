"""`docthink sweep`: a base pipeline recipe and a grid of its fields -> the runs of every point,
grouped as one ablation.

The pipeline recipe holds one section per stage (synth, export, train, merge, eval) without the
paths that chain them; a point's stage recipe is its section with the point's values set, and its
output folder is named by the hash of that recipe (with its inputs' folders, themselves named so),
so the same stage recipe always means the same folder and the same recorded recipe hash. A stage
whose recipe hash the registry has as a finished run is not run again: points that share a prefix
of the pipeline (every `merge.alpha` of one trained model) share those runs, and a sweep run again
recomputes nothing. Each stage runs through `run_stage` as its own command would, with the argv of
that command on the recipe file written beside its output."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from docthink.core.errors import UserError
from docthink.recipe import Recipe, RecipeError, load_recipe
from docthink.runs import Registry, recipe_hash, recipe_json
from docthink.stages.base import Stage, run_stage

STAGE_ORDER = ("synth", "export", "train", "merge", "eval")


class SweepError(UserError, ValueError):
    """A grid or pipeline recipe that cannot make runs; the message names the field."""


class PipelineRecipe(Recipe):
    """One section per stage; the paths that chain them (outputs, the data a stage reads, the
    checkpoint evaluated) are set by the sweep."""

    synth: dict[str, Any] = Field(description="a synth recipe without `out`")
    export: dict[str, Any] = Field(default_factory=dict,
                                   description="an export recipe without run_dir and out")
    train: dict[str, Any] = Field(description="a train recipe without data and out")
    merge: dict[str, Any] | None = Field(
        None, description="{alpha: 0.25, ...}: merge the trained model into train.model; null: "
        "evaluate the trained model itself")
    eval: dict[str, Any] = Field(description="an eval recipe without out; its model is the "
                                 "checkpoint, with the other settings of `model` kept")


def parse_grid(items: Sequence[str]) -> dict[str, list[object]]:
    """`trace.top_k=8,16` -> {"synth.trace.top_k": [8, 16]}: values read as YAML scalars; a
    field not under a stage's name belongs to the stage whose recipe has its first part."""
    from docthink.stages import STAGES

    grid: dict[str, list[object]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise SweepError(f"grid item {item!r}: expected FIELD=VALUE[,VALUE...]")
        head = key.split(".")[0]
        if head not in STAGE_ORDER:
            owners = [s for s in STAGE_ORDER if s != "merge"
                      and head in STAGES[s].recipe.model_fields]
            if not owners:
                raise SweepError(f"grid item {item!r}: no stage's recipe has a field {head!r}")
            key = f"{owners[0]}.{key}"
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def _get(data: dict[str, Any], dotted: str) -> object:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _set(data: dict[str, Any], dotted: str, value: object) -> dict[str, Any]:
    """A copy of `data` with `dotted` set (missing sections created)."""
    out = json.loads(json.dumps(data))
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def points(base: PipelineRecipe, grid: dict[str, list[object]]
           ) -> list[tuple[dict[str, object], bool]]:
    """Every grid point, and the base recipe's own values when the grid does not hold them;
    (values by field, is it the base)."""
    dumped = base.model_dump(mode="json")
    base_values = {k: _get(dumped, k) for k in grid}
    unset = [k for k, v in base_values.items() if v is None]
    if unset:
        raise SweepError(f"grid field {unset[0]}: the base recipe does not set it; give its "
                         "value there (the base recipe is the point the others are compared to)")
    combos = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    out = [(p, p == base_values) for p in combos]
    if not any(is_base for _, is_base in out):
        out.insert(0, (base_values, True))
    return out


@dataclass
class StageRun:
    kind: str
    run_id: str
    reused: bool
    folder: Path  # its output folder (train: the folder holding model/)


@dataclass
class PointResult:
    values: dict[str, object]
    is_base: bool
    runs: list[StageRun] = field(default_factory=list)

    @property
    def eval_run(self) -> str:
        return self.runs[-1].run_id


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Sweeper:
    def __init__(self, root: Path, registry: Path | None, runs_dir: Path,
                 say: Callable[[str], None]) -> None:
        self.root = root
        self.registry_path = registry
        self.runs_dir = runs_dir
        self.say = say

    def _done(self, kind: str, hash_: str) -> str | None:
        from docthink.runs import default_registry_path

        with Registry(self.registry_path or default_registry_path()) as registry:
            row = registry.db.execute(
                "SELECT id FROM runs WHERE kind = ? AND recipe_hash = ? AND status = 'ok'"
                " ORDER BY started_at DESC LIMIT 1", (kind, hash_)).fetchone()
        return None if row is None else str(row[0])

    def outputs(self, run_id: str) -> list[str]:
        from docthink.runs import default_registry_path

        with Registry(self.registry_path or default_registry_path()) as registry:
            return [a.path for a in registry.get(run_id).outputs()]

    def stage(self, kind: str, section: dict[str, Any], out_field: str, label: str) -> StageRun:
        """Run the stage on `section` (its output folder set here) unless a finished run has the
        same recipe hash."""
        from docthink.stages import STAGES

        stage: Stage[Any] = STAGES[kind]
        folder = self.root / f"{kind}-{_digest(section)}"
        data = _set(section, out_field, str(folder)) if out_field else section
        if kind == "merge":
            data = {**{k: v for k, v in data.items() if k != "alpha"},
                    "alphas": [section["alpha"]], "outs": [str(folder)]}
        try:
            recipe = load_recipe(stage.recipe, None, data)
        except RecipeError as exc:
            raise SweepError(f"{label}: {kind} recipe: {exc}") from None
        if kind == "train":  # what `docthink train` decides before its run: the precision
            import torch

            from docthink.train.recipe import resolve

            recipe = resolve(recipe, cuda=torch.cuda.is_available())
        hash_ = recipe_hash(recipe)
        done = self._done(kind, hash_)
        if done is not None:
            self.say(f"  {kind}: done before as run {done} (same recipe hash)")
            return StageRun(kind, done, True, folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        recipe_file = self.root / f"{kind}-{_digest(section)}.yaml"
        recipe_file.write_text(yaml.safe_dump(recipe_json(recipe), sort_keys=False),
                               encoding="utf-8")
        run_id, outcome = run_stage(stage, recipe, argv=["docthink", *stage.argv(recipe_file)],
                                    runs_dir=self.runs_dir, registry=self.registry_path)
        self.say(f"  {kind}: {outcome.lines[0]} [run {run_id}]")
        return StageRun(kind, run_id, False, folder)

    def point(self, base: PipelineRecipe, values: dict[str, object], is_base: bool
              ) -> PointResult:
        dumped = base.model_dump(mode="json")
        for key, value in values.items():
            dumped = _set(dumped, key, value)
        label = ", ".join(f"{k}={v}" for k, v in values.items())
        result = PointResult(values, is_base)
        self.say(f"point {label}{' (base)' if is_base else ''}")
        synth = self.stage("synth", dumped["synth"], "out", label)
        export = self.stage("export", {**dumped["export"], "run_dir": str(synth.folder)}, "out",
                            label)
        train = self.stage("train", {**dumped["train"], "data": str(export.folder)}, "out", label)
        result.runs += [synth, export, train]
        checkpoint = self.outputs(train.run_id)[0]  # the model folder inside train's out
        if dumped["merge"] is not None:
            merge = self.stage("merge", {**dumped["merge"], "base": dumped["train"]["model"],
                                         "tuned": checkpoint}, "", label)
            result.runs.append(merge)
            checkpoint = str(merge.folder)
        model = {**dumped["eval"].get("model", {}), "kind": "local", "path": checkpoint}
        result.runs.append(self.stage("eval", {**dumped["eval"], "model": model}, "out", label))
        return result


def sweep(name: str, base_file: Path, grid_items: Sequence[str], root: Path,
          registry: Path | None, runs_dir: Path, say: Callable[[str], None]
          ) -> list[PointResult]:
    """Every point's runs (run or found done), recorded as the ablation `name`."""
    from docthink.runs import default_registry_path

    base = load_recipe(PipelineRecipe, base_file, {})
    grid = parse_grid(grid_items)
    dumped = base.model_dump(mode="json")
    for key in grid:
        if key.startswith("merge.") and dumped["merge"] is None:
            raise SweepError(f"grid field {key}: the base recipe has no merge section")
    sweeper = Sweeper(root, registry, runs_dir, say)
    results = [sweeper.point(base, values, is_base) for values, is_base in points(base, grid)]
    with Registry(registry or default_registry_path()) as reg:
        reg.record_ablation(name, dumped, grid,
                            [(r.values, r.is_base, r.eval_run) for r in results])
    return results
