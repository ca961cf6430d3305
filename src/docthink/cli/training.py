"""`docthink train` and `docthink merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from docthink.cli.common import (
    PresetOpt,
    PrintRecipe,
    RecipeOpt,
    RegistryOpt,
    RunsDir,
    _print_recipe,
    _run,
    app,
)
from docthink.core.errors import UserError, needs_extra
from docthink.merge.recipe import MergeRecipe
from docthink.recipe import load_recipe
from docthink.stages import STAGES


@app.command()
def merge(
    base: Annotated[Path | None, typer.Option(help="starting checkpoint (safetensors)")] = None,
    tuned: Annotated[
        Path | None, typer.Option(help="fine-tuned checkpoint or PEFT LoRA adapter")
    ] = None,
    alpha: Annotated[
        str | None, typer.Option(help="strength(s), comma-separated: 0.25 or 0.25,0.5,1.0")
    ] = None,
    out: Annotated[
        list[Path] | None,
        typer.Option(help="output folder per alpha, or one containing {alpha}"),
    ] = None,
    shard_size: Annotated[int | None, typer.Option(help="bytes per output shard")] = None,
    chunk_bytes: Annotated[int | None, typer.Option(help="buffer budget (memory)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing output folders")] = False,
    extrapolate: Annotated[
        bool, typer.Option("--extrapolate", help="allow strengths outside [0, 1]")
    ] = False,
    recipe: RecipeOpt = None,
    preset: PresetOpt = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Task arithmetic, streamed: base + alpha * (tuned - base), several alphas in one pass."""
    alphas = _alphas(alpha) if alpha is not None else None
    # the two flags only turn their setting on; so may a recipe
    overrides = {"base": base, "tuned": tuned, "alphas": alphas, "outs": out,
                 "shard_size": shard_size, "chunk_bytes": chunk_bytes,
                 "extrapolate": extrapolate or None, "overwrite": overwrite or None}
    if print_recipe:
        placeholders = {"base": "BASE", "tuned": "TUNED", "outs": ["OUT"]}
        _print_recipe(MergeRecipe, recipe, overrides, placeholders, preset=preset)
        return
    _run(STAGES["merge"], load_recipe(MergeRecipe, recipe, overrides, preset=preset), runs_dir,
         registry)


def _alphas(text: str) -> list[float]:
    try:
        return [float(a) for a in text.split(",")]
    except ValueError:
        raise UserError(f"--alpha: expected numbers separated by commas, got {text!r}") from None


@app.command()
def train(
    recipe: Annotated[Path | None, typer.Argument(help="recipe YAML (flags override it)")] = None,
    model: Annotated[str | None, typer.Option(help="starting checkpoint: folder or hub id")] = None,
    data: Annotated[Path | None, typer.Option(help="export folder (docthink export --format trl)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="checkpoints, logs, model [run folder]")] = None,
    finetune: Annotated[str | None, typer.Option(help="full or lora")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="learning rate [5e-6]")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the data [1]")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimizer steps")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of data order, mixture and new rows")] = None,
    merge_alphas: Annotated[
        str | None, typer.Option("--merge", help="then merge into the starting model: 0.25 or 0.25,0.5")
    ] = None,
    preset: PresetOpt = None,
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """SFT on an export with TRL: control tokens, loss on the answer, optional merge after."""
    from docthink.train.recipe import TrainRecipe, resolve

    overrides = {"model": model, "data": data, "out": out, "finetune": finetune,
                 "learning_rate": learning_rate, "epochs": epochs, "max_steps": max_steps,
                 "seed": seed}
    if print_recipe:
        placeholders = {"model": "MODEL", "data": "EXPORT_DIR"}
        _print_recipe(TrainRecipe, recipe, overrides, placeholders, preset=preset)
        return
    with needs_extra("train", "docthink train"):
        import torch

        import docthink.train.sft  # noqa: F401  (the stage imports it: fail here, before the run)
    resolved = resolve(load_recipe(TrainRecipe, recipe, overrides, preset=preset),
                       cuda=torch.cuda.is_available())
    outcome = _run(STAGES["train"], resolved, runs_dir, registry)
    if merge_alphas is not None:
        trained = outcome.outputs[0].path
        merge(base=_local_checkpoint(resolved.model), tuned=trained, alpha=merge_alphas,
              out=[trained.parent / "merged-{alpha}"], runs_dir=runs_dir, registry=registry)


def _local_checkpoint(model: str) -> Path:
    """The folder a model id names: itself, or its snapshot in the local hub cache."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, local_files_only=True))

