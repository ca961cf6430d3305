"""SFT with TRL's `SFTTrainer` on a docthink export.

`train(recipe, out)` loads the starting checkpoint with `AutoModelForImageTextToText` and
`AutoProcessor`, adds the control tokens, checks the chat template, mixes the export's rows, and
trains with loss on the assistant turn only. It writes into `out`:

    checkpoints/   TRL checkpoints (recipe.save_steps), resumable with transformers' Trainer
    logs/train_log.jsonl   every logged step (loss, learning rate, grad norm, tokens)
    model/         the final model (or LoRA adapter) with its processor, tokenizer and template
    result.json    what the run record keeps: metrics, mixture counts, token setup

Multi-GPU goes through accelerate: with `launch.accelerate_config`, `run_training` starts
`accelerate launch --config_file ... -m docthink.train.worker` and reads `result.json` back;
DeepSpeed and FSDP configs are handed to TRL as they are."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from docthink.core.errors import OutputExists
from docthink.train.data import (
    MixReport,
    PageCollator,
    TrainRow,
    mix,
    read_export,
    trl_example,
)
from docthink.train.recipe import TrainRecipe
from docthink.train.tokens import (
    TokenSetup,
    add_control_tokens,
    check_cot_system,
    check_prefix_preserving,
)

RESULT_FILE = "result.json"
LOG_FILE = "logs/train_log.jsonl"


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    metrics: dict[str, Any]
    mixture: dict[str, int]  # rows kept per "think/system", "no_think/none", ...
    tokens: dict[str, Any]  # TokenSetup as JSON
    log_history: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "model_dir": str(self.model_dir)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{**data, "model_dir": Path(data["model_dir"])})


def load_model(recipe: TrainRecipe) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = torch.bfloat16 if recipe.precision == "bf16" else torch.float32
    processor = AutoProcessor.from_pretrained(recipe.model)
    model = AutoModelForImageTextToText.from_pretrained(recipe.model, dtype=dtype)
    return model, processor


def sft_config(recipe: TrainRecipe, out: Path) -> Any:
    from trl import SFTConfig

    assert recipe.precision != "auto", "resolve the recipe first (docthink.train.recipe.resolve)"
    launch = recipe.launch
    return SFTConfig(
        output_dir=str(out / "checkpoints"),
        seed=recipe.seed,
        data_seed=recipe.seed,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps or -1,
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        max_length=recipe.max_length,
        bf16=recipe.precision == "bf16",
        fp16=False,
        activation_checkpointing=recipe.gradient_checkpointing,  # transformers 5 name
        assistant_only_loss=recipe.loss_mask == "assistant_markers",
        completion_only_loss=True if recipe.loss_mask == "completion" else None,
        logging_steps=recipe.logging_steps,
        save_strategy="steps" if recipe.save_steps else "no",
        save_steps=recipe.save_steps or 500,
        save_total_limit=recipe.save_total_limit,
        deepspeed=str(launch.deepspeed) if launch.deepspeed else None,
        fsdp=launch.fsdp or "",
        fsdp_config=str(launch.fsdp_config) if launch.fsdp_config else None,
        report_to="none",
        **recipe.trl_args,
    )


def lora_config(recipe: TrainRecipe, tokens: TokenSetup, *, tied: bool) -> Any:
    """LoRA on the recipe's modules; when control tokens were added, the token tables are trained
    whole (PEFT modules_to_save, kept tied when the model ties them), since fresh rows cannot be
    learned through a low-rank delta of the rest. The merge reads both kinds of tensors."""
    from peft import LoraConfig

    lora = recipe.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=["embed_tokens", "lm_head"] if tokens.added else None,
        ensure_weight_tying=tied and bool(tokens.added),
        task_type="CAUSAL_LM",
    )


def _jsonl_log(path: Path, log: logging.Logger) -> Any:
    """A TrainerCallback writing each logged step as one JSON line (and to the run log)."""
    from transformers import TrainerCallback

    path.parent.mkdir(parents=True, exist_ok=True)

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")
                log.info("step %s %s", state.global_step, logs)

    return JsonlLog()


def _loss_curve(history: list[dict[str, Any]]) -> dict[str, float]:
    losses = [h["loss"] for h in history if "loss" in h]
    k = max(1, len(losses) // 5)
    return {"loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k,
            "loss_logged": len(losses)}


def make_trainer(
    model: Any,
    processor: Any,
    rows: list[TrainRow],
    recipe: TrainRecipe,
    out: Path,
    log: logging.Logger,
    tokens: TokenSetup,
    args: Any = None,
) -> Any:
    """TRL's `SFTTrainer` over `rows`, its collator opening the pages of each batch. `args`: the
    recipe's SFTConfig when already built (it must exist before a ZeRO-3 model is loaded)."""
    from datasets import Dataset
    from trl import SFTTrainer

    examples = [trl_example(r, recipe.loss_mask) for r in rows]
    if recipe.loss_mask == "completion":
        check_prefix_preserving(processor, examples[0]["prompt"], examples[0]["completion"])
    trainer = SFTTrainer(
        model=model,
        args=sft_config(recipe, out) if args is None else args,
        train_dataset=Dataset.from_list(examples),
        processing_class=processor,
        peft_config=lora_config(recipe, tokens, tied=_ties(model))
        if recipe.finetune == "lora" else None,
        callbacks=[_jsonl_log(out / LOG_FILE, log)],
    )
    trainer.data_collator = PageCollator(trainer.data_collator, recipe.mixture.max_pixels)
    return trainer


def fit(trainer: Any, out: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train (from the newest checkpoint in `out` when `resume`); return the metrics (loss
    curve, steps, tokens and tokens/s). Does not save the final model."""
    last = _last_checkpoint(out / "checkpoints")
    if last is not None and not resume:
        raise OutputExists(f"{out / 'checkpoints'}: holds checkpoints of an earlier run; "
                           "set resume: true to continue it, or train into another out")
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last if resume else None)
    seconds = time.perf_counter() - start
    history = trainer.state.log_history
    tokens_seen = trainer._total_train_tokens  # TRL's count of non-padding tokens, all ranks
    metrics = {
        **_loss_curve(history),
        "train_loss": output.training_loss,
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 2),
        "train_tokens": tokens_seen,
        "tokens_per_s": round(tokens_seen / seconds, 1),
    }
    return metrics


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def save_final(trainer: Any, processor: Any, tokens: TokenSetup, model_dir: Path) -> None:
    trainer.save_model(str(model_dir))
    if trainer.is_world_process_zero():
        # The trainer's pickled arguments name this run's folders: the model's digest would
        # change with where it was trained. The run folder keeps the resolved recipe instead.
        (model_dir / "training_args.bin").unlink()
        processor.save_pretrained(str(model_dir))
        if tokens.added and _is_peft(trainer.model):
            # merge needs the grown vocabulary's config beside a LoRA adapter
            trainer.model.get_base_model().config.save_pretrained(str(model_dir))


def _ties(model: Any) -> bool:
    return bool(model.config.get_text_config().tie_word_embeddings)


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def train(recipe: TrainRecipe, out: Path, log: logging.Logger) -> TrainResult:
    """Train as `recipe` says; write checkpoints, logs, the final model and result.json in `out`."""
    from transformers import set_seed

    set_seed(recipe.seed)
    rows, report = load_rows(recipe)
    log.info("mixture: %s", dict(report.kept))
    # built before the model: with a DeepSpeed ZeRO-3 config, loading then partitions the weights
    args = sft_config(recipe, out)
    model, processor = load_model(recipe)
    tokens = add_control_tokens(model, processor)
    check_cot_system(processor)
    trainer = make_trainer(model, processor, rows, recipe, out, log, tokens, args)
    metrics = fit(trainer, out, resume=recipe.resume)
    model_dir = out / "model"
    save_final(trainer, processor, tokens, model_dir)
    result = TrainResult(
        model_dir=model_dir,
        metrics={**metrics, **report.as_metrics()},
        mixture=dict(sorted(report.kept.items())),
        tokens=asdict(tokens),
        log_history=trainer.state.log_history,
    )
    if trainer.is_world_process_zero():
        (out / RESULT_FILE).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def load_rows(recipe: TrainRecipe) -> tuple[list[TrainRow], MixReport]:
    return mix(read_export(recipe.data), recipe.mixture, recipe.seed)


def run_training(recipe: TrainRecipe, out: Path, log: logging.Logger) -> TrainResult:
    """`train` in this process, or under `accelerate launch` when the recipe names a config."""
    out.mkdir(parents=True, exist_ok=True)
    launch = recipe.launch
    if launch.accelerate_config is None:
        return train(recipe, out, log)
    recipe_file = out / "train_recipe.json"
    recipe_file.write_text(recipe.model_dump_json(indent=2) + "\n")
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(launch.accelerate_config)]
    if launch.num_processes is not None:
        command += ["--num_processes", str(launch.num_processes)]
    command += ["-m", "docthink.train.worker", str(recipe_file), str(out)]
    log.info("launching: %s", " ".join(command))
    (out / RESULT_FILE).unlink(missing_ok=True)
    done = subprocess.run(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"accelerate launch exited with {done.returncode}: {' '.join(command)}")
    return TrainResult.from_json(json.loads((out / RESULT_FILE).read_text()))
