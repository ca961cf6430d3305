"""`docthink train` and `docthink merge`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from docthink.cli.common import (
    PrintRecipe,
    RecipeOpt,
    RegistryOpt,
    RunsDir,
    _fail,
    _load,
    _print_recipe,
    _say,
    app,
)
from docthink.merge import CheckpointError, MergeError, merge_checkpoints
from docthink.recipe import (
    MergeRecipe,
)
from docthink.runs import (
    mark_output,
    parent_runs,
    start_run,
)


@app.command()
def merge(
    base: Annotated[Path, typer.Option(help="starting checkpoint (safetensors)")],
    tuned: Annotated[Path, typer.Option(help="fine-tuned checkpoint or PEFT LoRA adapter")],
    alpha: Annotated[str, typer.Option(help="strength(s), comma-separated: 0.25 or 0.25,0.5,1.0")],
    out: Annotated[
        list[Path],
        typer.Option(help="output folder per alpha, or one containing {alpha}"),
    ],
    shard_size: Annotated[int | None, typer.Option(help="bytes per output shard")] = None,
    chunk_bytes: Annotated[int | None, typer.Option(help="buffer budget (memory)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing output folders")] = False,
    recipe: RecipeOpt = None,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """Task arithmetic, streamed: base + alpha * (tuned - base), several alphas in one pass."""
    try:
        alphas = [float(a) for a in alpha.split(",")]
    except ValueError:
        raise _fail(f"--alpha: expected numbers separated by commas, got {alpha!r}") from None
    outs = out
    if len(out) == 1 and "{alpha}" in str(out[0]):
        outs = [Path(str(out[0]).replace("{alpha}", f"{a:g}")) for a in alphas]
    overrides = {"base": base, "tuned": tuned, "alphas": alphas, "outs": outs,
                 "shard_size": shard_size, "chunk_bytes": chunk_bytes}
    resolved = _load(MergeRecipe, recipe, overrides)
    parents = parent_runs(resolved.base) + parent_runs(resolved.tuned)
    with start_run("merge", resolved, command=sys.argv, runs_dir=runs_dir,
                   registry_path=registry, parents=parents) as run:
        try:
            report = merge_checkpoints(
                resolved.base, resolved.tuned, resolved.alphas, resolved.outs,
                shard_size=resolved.shard_size, chunk_bytes=resolved.chunk_bytes,
                progress=True, overwrite=overwrite, known_digest=run.known_digest,
            )
        except (MergeError, CheckpointError, FileExistsError) as exc:
            raise _fail(str(exc)) from None
        run.remember(report.reusable)
        run.add_hashed_folder("input", resolved.base, report.base_files)
        run.add_hashed_folder("input", resolved.tuned, report.tuned_files)
        for output in report.outputs:
            run.add_hashed_folder("output", output.path, output.files)
            mark_output(output.path, run.id, "merge")
        run.metrics.update({"alphas": resolved.alphas, "tensors": report.n_tensors,
                            "seconds": round(report.seconds, 2)})
        run.summary["vocab_growth"] = [str(g) for g in report.vocab_growth]
    for output in report.outputs:
        _say(f"merged alpha={output.alpha:g} -> {output.path}")
    for growth in report.vocab_growth:
        _say(f"  vocabulary grew: {growth}")
    _say(f"{report.n_tensors} tensors in {report.seconds:.1f} s  [run {run.id}]")




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
    print_recipe: PrintRecipe = False,
    runs_dir: RunsDir = Path("runs"),
    registry: RegistryOpt = None,
) -> None:
    """SFT on an export with TRL: control tokens, loss on the answer, optional merge after."""
    import torch

    from docthink.train import ExportError, TemplateError, TrainRecipe, resolve
    from docthink.train.sft import run_training
    from docthink.train.tokens import CONTROL_TOKENS

    overrides = {"model": model, "data": data, "out": out, "finetune": finetune,
                 "learning_rate": learning_rate, "epochs": epochs, "max_steps": max_steps,
                 "seed": seed}
    if print_recipe:
        placeholders = {"model": "MODEL", "data": "EXPORT_DIR"}
        _print_recipe(TrainRecipe, recipe, overrides, placeholders)
        return
    resolved = resolve(_load(TrainRecipe, recipe, overrides), cuda=torch.cuda.is_available())
    start = Path(resolved.model)
    parents = parent_runs(resolved.data) + (parent_runs(start) if start.is_dir() else [])
    with start_run("train", resolved, command=sys.argv, runs_dir=runs_dir, registry_path=registry,
                   parents=parents, inputs=[resolved.data]) as run:
        try:
            result = run_training(resolved, resolved.out or run.dir, run.log)
        except (ExportError, TemplateError, FileExistsError) as exc:
            raise _fail(str(exc)) from None
        run.metrics.update(result.metrics)
        run.summary.update({"mixture": result.mixture, "tokens": result.tokens,
                            "model_dir": str(result.model_dir.resolve())})
        run.add_output(result.model_dir)
        mark_output(result.model_dir, run.id, "train")
    m = result.metrics
    _say(f"train {result.model_dir}: {m['steps']} steps on {m['rows_trained']} rows "
         f"({m['rows_think']} with a trace), loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}, "
         f"{m['tokens_per_s']} tokens/s; added tokens {result.tokens['added'] or 'none'} "
         f"of {list(CONTROL_TOKENS)}  [run {run.id}]")
    if merge_alphas is not None:
        merge(base=_local_checkpoint(resolved.model), tuned=result.model_dir, alpha=merge_alphas,
              out=[result.model_dir.parent / "merged-{alpha}"], shard_size=None, chunk_bytes=None,
              overwrite=False, recipe=None, runs_dir=runs_dir, registry=registry)


def _local_checkpoint(model: str) -> Path:
    """The folder a model id names: itself, or its snapshot in the local hub cache."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, local_files_only=True))

