"""The merge stage's recipe."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from docthink.recipe import Recipe


class MergeRecipe(Recipe):
    preset_section = "merge"

    base: Path = Field(description="the starting checkpoint (safetensors, single or sharded)")
    tuned: Path = Field(description="the fine-tuned checkpoint, or a PEFT LoRA adapter folder")
    alphas: list[float] = Field(min_length=1, description="merge strengths: base + a*(tuned-base)")
    outs: list[Path] = Field(
        min_length=1, description="one output folder per alpha, or one whose name contains "
        "{alpha} (written out per alpha, e.g. merged-{alpha} -> merged-0.25)"
    )
    shard_size: int = Field(5 * 2**30, gt=0, description="bytes per output shard, at most")
    chunk_bytes: int = Field(32 * 2**20, gt=0, description="buffer budget of one step (memory)")
    extrapolate: bool = Field(
        False, description="allow strengths outside [0, 1] (past the base or past the tuned model)"
    )
    overwrite: bool = Field(False, description="replace output folders that exist")

    @model_validator(mode="after")
    def _alpha_in_the_name(self) -> MergeRecipe:
        if len(self.outs) == 1 and "{alpha}" in str(self.outs[0]):
            self.outs = [Path(str(self.outs[0]).replace("{alpha}", f"{a:g}")) for a in self.alphas]
        return self

    @model_validator(mode="after")
    def _one_out_per_alpha(self) -> MergeRecipe:
        if len(self.outs) != len(self.alphas):
            raise ValueError(f"{len(self.alphas)} alphas need as many outs, got {len(self.outs)}")
        return self

    @model_validator(mode="after")
    def _extrapolation_only_when_asked(self) -> MergeRecipe:
        outside = [a for a in self.alphas if not 0 <= a <= 1]
        if outside and not self.extrapolate:
            raise ValueError(f"alpha {outside[0]:g} is outside [0, 1], an extrapolation: ask for "
                             "it with --extrapolate (extrapolate: true in a recipe)")
        return self
