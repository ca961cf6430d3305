"""The model stages: train (SFT with TRL) and merge (task arithmetic)."""

from __future__ import annotations

from pathlib import Path

from docthink.core.vocab import CONTROL_TOKENS
from docthink.merge.recipe import MergeRecipe
from docthink.runs import Run
from docthink.stages.base import Outcome, Stage, Written
from docthink.train.recipe import TrainRecipe


def _train(recipe: TrainRecipe, run: Run) -> Outcome:
    from docthink.train.sft import run_training

    result = run_training(recipe, recipe.out or run.dir, run.log)
    m = result.metrics
    line = (f"train {result.model_dir}: {m['steps']} steps on {m['rows_trained']} rows "
            f"({m['rows_think']} with a trace), loss {m['loss_first']:.3f} -> "
            f"{m['loss_last']:.3f}, {m['tokens_per_s']} tokens/s; added tokens "
            f"{', '.join(result.tokens['added']) or 'none'} of {', '.join(CONTROL_TOKENS)}")
    summary = {"mixture": result.mixture, "tokens": result.tokens,
               "model_dir": str(result.model_dir.resolve())}
    return Outcome([line], [Written(result.model_dir)], dict(result.metrics), summary,
                   marks=[result.model_dir])


def _start(recipe: TrainRecipe) -> list[Path]:
    start = Path(recipe.model)  # a folder, or a hub id
    return [recipe.data, *([start] if start.is_dir() else [])]


TRAIN = Stage("train", ("train",), TrainRecipe, _train, inputs=lambda r: [r.data],
              parents=_start, recipe_option=False)


def _merge(recipe: MergeRecipe, run: Run) -> Outcome:
    from docthink.merge.core import merge_checkpoints

    report = merge_checkpoints(
        recipe.base, recipe.tuned, recipe.alphas, recipe.outs, shard_size=recipe.shard_size,
        chunk_bytes=recipe.chunk_bytes, progress=True, overwrite=recipe.overwrite,
        known_digest=run.known_digest,  # inputs the registry has hashed before are not read again
    )
    run.remember(report.reusable)
    lines = [f"{report.n_tensors} tensors in {report.seconds:.1f} s"]
    lines += [f"merged alpha={o.alpha:g} -> {o.path}" for o in report.outputs]
    lines += [f"  vocabulary grew: {growth}" for growth in report.vocab_growth]
    return Outcome(
        lines,
        [Written(o.path, o.files) for o in report.outputs],
        {"alphas": recipe.alphas, "tensors": report.n_tensors, "seconds": round(report.seconds, 2)},
        {"vocab_growth": [str(g) for g in report.vocab_growth]},
        marks=[o.path for o in report.outputs],
        inputs=[Written(recipe.base, report.base_files), Written(recipe.tuned, report.tuned_files)],
    )


MERGE = Stage("merge", ("merge",), MergeRecipe, _merge, parents=lambda r: [r.base, r.tuned])
