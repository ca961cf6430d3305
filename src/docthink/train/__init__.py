"""SFT on docthink's export with TRL: the control-token setup, the data mixture, the trainer.

Needs the `train` extra (torch, transformers, trl, datasets, accelerate, peft, torchvision)."""

from docthink.train.data import ExportError, TrainRow, mix, read_export
from docthink.train.recipe import TrainRecipe, resolve
from docthink.train.tokens import TemplateError, add_control_tokens, check_cot_system

__all__ = [
    "ExportError",
    "TemplateError",
    "TrainRecipe",
    "TrainRow",
    "add_control_tokens",
    "check_cot_system",
    "mix",
    "read_export",
    "resolve",
]
