"""Before a run: the shipped presets (`docthink presets`) and the cost plan (`docthink plan`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from docthink.cli.common import (
    ExecutorOpt,
    PresetOpt,
    RayAddressOpt,
    RecipeOpt,
    SeedOpt,
    ShardSizeOpt,
    app,
    out_console,
)
from docthink.engine.executor import executor_overrides
from docthink.plan.bill import PlanOptions
from docthink.recipe import load_recipe, preset_files, preset_names
from docthink.stages import STAGES

presets_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None,
    help="The papers' settings shipped as recipe files: list them, show one.",
)
app.add_typer(presets_app, name="presets")


def _echo(text: str) -> None:
    out_console.print(text, markup=False, highlight=False, soft_wrap=True)


@presets_app.command("list")
def presets_list() -> None:
    """Every preset, the commands it covers (--preset NAME on each) and what it is."""
    for name, about in preset_names().items():
        covers = ", ".join(f.stem for f in preset_files(name))
        _echo(f"{name}  ({covers})\n    {about}")


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="preset name (docthink presets list)")],
) -> None:
    """The preset's recipe files, each value with its source; `docthink COMMAND --preset NAME
    --print-recipe` prints one resolved."""
    for path in preset_files(name):
        _echo(f"# ---- docthink {path.stem.replace('eval', 'eval run')} --preset {name} "
              f"({path.name}) ----\n{path.read_text(encoding='utf-8').rstrip()}\n")


plan_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None,
    help="What a run will send and cost, before it runs: requests, images and tokens per stage, "
    "GPU-hours and API cost at stated rates. No model is called unless --calibrate N asks.",
)
app.add_typer(plan_app, name="plan")

Calibrate = Annotated[int, typer.Option(
    "--calibrate", min=0, help="run N questions for real first (in a scratch folder) and "
    "extrapolate their output lengths, trace sizes and speed")]
Processor = Annotated[Path | None, typer.Option(
    "--processor", help="a model folder: its preprocessor_config.json sets the image-token rule "
    "and its tokenizer.json counts text (served models; local models use their own folder)")]
Throughput = Annotated[float | None, typer.Option(
    "--throughput", min=0.001, help="tokens (prompt + output) per second per GPU")]
Gpus = Annotated[int, typer.Option(
    "--gpus", min=1, help="GPUs serving the calibration run (turns its speed into a per-GPU rate)")]
PriceIn = Annotated[float | None, typer.Option(
    "--price-in", min=0, help="USD per million prompt tokens")]
PriceOut = Annotated[float | None, typer.Option(
    "--price-out", min=0, help="USD per million output tokens")]
Json = Annotated[bool, typer.Option("--json", help="the plan as JSON on stdout")]


@plan_app.command("synth")
def plan_synth(
    corpus: Annotated[Path | None, typer.Option(help="corpus folder")] = None,
    questions: Annotated[Path | None, typer.Option(help="questions JSONL/Parquet/samples.json")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="the run's output folder (plan.json goes there)")] = None,
    recipe: RecipeOpt = None,
    preset: PresetOpt = None,
    seed: SeedOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    shard_size: ShardSizeOpt = None,
    processor: Processor = None,
    calibrate: Calibrate = 0,
    throughput: Throughput = None,
    gpus: Gpus = 1,
    price_in: PriceIn = None,
    price_out: PriceOut = None,
    json_out: Json = False,
) -> None:
    """The plan of `docthink synth` with the same arguments (a calibration sample runs where
    they say); written to OUT/plan.json, which the run's data card shows beside what it spent."""
    overrides: dict[str, object] = {"corpus": corpus, "questions": questions, "out": out,
                                    "seed": seed,
                                    "executor": executor_overrides(executor, ray_address,
                                                                   shard_size)}
    options = PlanOptions(processor, calibrate, throughput, gpus, price_in, price_out)
    _plan("synth", recipe, preset, overrides, options, json_out)


@plan_app.command("questions")
def plan_questions(
    corpus: Annotated[Path | None, typer.Option(help="corpus folder")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="the run's output folder (plan.json goes there)")] = None,
    recipe: RecipeOpt = None,
    preset: PresetOpt = None,
    seed: SeedOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    shard_size: ShardSizeOpt = None,
    processor: Processor = None,
    throughput: Throughput = None,
    price_in: PriceIn = None,
    price_out: PriceOut = None,
    json_out: Json = False,
) -> None:
    """The plan of `docthink questions` with the same arguments: the writer's requests exactly,
    the judge's as bounds and estimates; written to OUT/plan.json."""
    overrides: dict[str, object] = {"corpus": corpus, "out": out, "seed": seed,
                                    "executor": executor_overrides(executor, ray_address,
                                                                   shard_size)}
    options = PlanOptions(processor, 0, throughput, 1, price_in, price_out)
    _plan("questions", recipe, preset, overrides, options, json_out)


def _plan(kind: str, recipe: Path | None, preset: str | None, overrides: dict[str, object],
          options: PlanOptions, json_out: bool) -> None:
    stage = STAGES[kind]
    assert stage.plan is not None  # the commands above name stages that have a plan
    plan = stage.plan(load_recipe(stage.recipe, recipe, overrides, preset=preset), options)
    if json_out:
        typer.echo(json.dumps(plan.to_json(), indent=2))
    else:
        _echo(plan.table())
