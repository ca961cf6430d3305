"""The training recipe: which model, which export, how the data is mixed and how TRL trains.

Defaults follow paper 1's SFT (learning rate 5e-6); anything that changes results and is decided
at run time (the precision on a machine without a GPU) is resolved into the recipe before the run
starts, so the run record shows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from docthink.core.vocab import ExampleKind, Placement
from docthink.recipe import Recipe

PLACEMENTS: tuple[Placement, ...] = ("system", "prefix", "suffix", "none")


class MixtureSettings(Recipe):
    kinds: list[ExampleKind] = Field(
        default_factory=lambda: ["trace", "plain"], min_length=1,
        description="rows kept, by the export's kind column: trace (a question with its "
        "reasoning trace, whatever the placement) and plain (long-document QA, no trace)",
    )
    placements: list[Placement] = Field(
        default_factory=lambda: list(PLACEMENTS), min_length=1,
        description="rows kept, by where the export put <cot>: system, prefix, suffix, or none "
        "(no token: plain QA and no-trace rows)",
    )
    traces: Literal["keep", "strip"] = Field(
        "keep", description="keep: rows with a <think> trace train the switch; strip: they lose "
        "<cot> and the trace and keep the answer (paper 2's non-think-only mixture)",
    )
    think_share: float | None = Field(
        None, ge=0, le=1, description="share of think rows in the training set, reached by "
        "dropping rows of the larger side (chosen by seed); 0: non-think only; null: as exported",
    )
    max_pages: int | None = Field(
        None, ge=1, description="drop examples with more page images than this (counted in the "
        "run's metrics); null: keep all",
    )
    max_pixels: int | None = Field(
        None, ge=784, description="downscale every page to at most this many pixels (w x h, "
        "aspect kept) before the processor sees it; null: as exported",
    )


class LoraSettings(Recipe):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = Field(
        "all-linear", description="PEFT target_modules: a list of module names or all-linear"
    )


class LaunchSettings(Recipe):
    accelerate_config: Path | None = Field(
        None, description="accelerate config file: training runs under `accelerate launch "
        "--config_file` (multi-GPU, DeepSpeed, FSDP as that file says); null: in this process",
    )
    num_processes: int | None = Field(
        None, ge=1, description="passed to accelerate launch --num_processes; null: the config's",
    )
    deepspeed: Path | None = Field(
        None, description="DeepSpeed JSON config, handed to TRL as SFTConfig.deepspeed"
    )
    fsdp: str | None = Field(None, description="SFTConfig.fsdp, e.g. 'full_shard auto_wrap'")
    fsdp_config: Path | None = Field(None, description="SFTConfig.fsdp_config file")


class TrainRecipe(Recipe):
    preset_section = "train"

    model: str = Field(
        description="starting checkpoint: a local folder or a hub id, loaded with "
        "AutoModelForImageTextToText and AutoProcessor"
    )
    data: Path = Field(description="export folder of `docthink export --format trl`")
    out: Path | None = Field(
        None, description="where checkpoints/, logs/ and model/ go; null: the run's folder"
    )
    seed: int = Field(0, description="model init of new rows, data order, mixture sampling")
    finetune: Literal["full", "lora"] = Field("full", description="full fine-tuning or LoRA")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="used when finetune=lora")
    learning_rate: float = Field(5e-6, gt=0, description="paper 1's SFT: 5e-6")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name")
    warmup: float = Field(
        0.03, ge=0, description="linear warmup: a ratio of all steps when below 1, else steps"
    )
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many steps (wins over epochs)"
    )
    batch_size: int = Field(1, ge=1, description="examples per device per step")
    grad_accum: int = Field(8, ge=1, description="gradient accumulation steps")
    max_length: int | None = Field(
        None, ge=16, description="truncate longer sequences (images included) to this many tokens; "
        "null: never truncate (truncation inside a page breaks Qwen-VL)",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="weights and compute; auto: bf16 on a GPU, fp32 on CPU (resolved "
        "into the recorded recipe)",
    )
    gradient_checkpointing: bool = Field(True, description="trade compute for activation memory")
    loss_mask: Literal["completion", "assistant_markers"] = Field(
        "completion", description="loss on the assistant turn only. completion: TRL's "
        "prompt-completion collator (any prefix-preserving template); assistant_markers: TRL's "
        "assistant_only_loss, which needs {% generation %} markers (TRL patches known templates)",
    )
    mixture: MixtureSettings = Field(default_factory=MixtureSettings)
    logging_steps: int = Field(1, ge=1)
    save_steps: int | None = Field(
        500, ge=1, description="checkpoint every N steps into checkpoints/; null: final model only"
    )
    resume: bool = Field(
        False, description="continue from the newest checkpoint in out/checkpoints (a killed run "
        "of the same recipe); without it, existing checkpoints there are an error",
    )
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept")
    launch: LaunchSettings = Field(default_factory=LaunchSettings)
    trl_args: dict[str, Any] = Field(
        default_factory=dict,
        description="more SFTConfig fields, passed as they are (TRL validates them)",
    )

    @field_validator("trl_args")
    @classmethod
    def _not_owned(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = set(OWNED_SFT_FIELDS) & set(value)
        if owned:
            raise ValueError(f"set {sorted(owned)} with the recipe's own fields, not trl_args")
        return value

    @model_validator(mode="after")
    def _some_rows(self) -> TrainRecipe:
        m = self.mixture
        if m.think_share == 1 and m.traces == "strip":
            raise ValueError("mixture.think_share 1 with traces strip leaves no row")
        return self


# SFTConfig fields the recipe sets itself (trl_args may not override them).
OWNED_SFT_FIELDS = (
    "output_dir", "seed", "data_seed", "learning_rate", "lr_scheduler_type", "warmup_steps",
    "weight_decay", "max_grad_norm", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "max_length", "bf16", "fp16", "gradient_checkpointing",
    "activation_checkpointing",
    "assistant_only_loss", "completion_only_loss", "logging_steps", "save_strategy", "save_steps",
    "save_total_limit", "deepspeed", "fsdp", "fsdp_config",
)


def resolve(recipe: TrainRecipe, *, cuda: bool) -> TrainRecipe:
    """The recipe with run-time decisions written in (what the run records)."""
    if recipe.precision != "auto":
        return recipe
    return recipe.model_copy(update={"precision": "bf16" if cuda else "fp32"})
