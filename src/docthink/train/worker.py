"""The training entry point `accelerate launch` runs on every rank:

    accelerate launch --config_file CFG -m docthink.train.worker RECIPE.json OUT

Rank 0 writes OUT/result.json, which `docthink train` reads back and records."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from docthink.train.recipe import TrainRecipe
from docthink.train.sft import train


def main(argv: list[str]) -> None:
    recipe_file, out = Path(argv[0]), Path(argv[1])
    recipe = TrainRecipe.model_validate_json(recipe_file.read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train(recipe, out, logging.getLogger("docthink.train"))


if __name__ == "__main__":
    main(sys.argv[1:])
