"""`docthink train` at its edges: the recipe, bad inputs named, LoRA with new tokens merged in the
same command, and a launch through `accelerate launch` with a config file passed through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from docthink.cli import app
from docthink.runs import Registry
from tests.helpers import docthink
from tests.train.conftest import without_control_tokens

FAST = ("--lr", "1e-3", "--max-steps", "3")


def _recipe(path: Path, **fields: object) -> Path:
    data = {"gradient_checkpointing": False, "batch_size": 2, "grad_accum": 1, "warmup": 0,
            **fields}
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data, default=str))))
    return path


def test_print_recipe_is_a_valid_commented_recipe(tmp_path: Path) -> None:
    text = docthink("train", "--print-recipe", "--model", "m", "--data", tmp_path)
    assert "# paper 1's SFT: 5e-6\nlearning_rate: 5.0e-06" in text
    assert "precision: auto" in text and "loss_mask: completion" in text
    (tmp_path / "r.yaml").write_text(text)
    again = docthink("train", "--print-recipe", str(tmp_path / "r.yaml"))
    assert again == text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"trl_args": {"learning_rate": 1.0}}, "set ['learning_rate'] with the recipe's own fields"),
        ({"finetune": "qlora"}, "finetune: Input should be 'full' or 'lora'"),
        ({"mixture": {"think_share": 1.0, "traces": "strip"}}, "leaves no row"),
    ],
)
def test_bad_recipes_are_refused_with_the_field(tmp_path: Path, fields: dict, message: str) -> None:
    recipe = _recipe(tmp_path / "r.yaml", model="m", data=str(tmp_path), **fields)
    result = CliRunner().invoke(app, ["train", str(recipe), "--registry", str(tmp_path / "r.db")])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_folder_that_is_not_an_export_is_named(tiny, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--model", str(tiny["qwen2.5-vl"]), "--data",
                                      str(tmp_path), "--runs-dir", str(tmp_path / "runs"),
                                      "--registry", str(tmp_path / "r.db")])
    assert result.exit_code == 2 and "no train.parquet" in result.output
    (run,) = Registry(tmp_path / "r.db").list(kind="train")
    assert run.status == "failed"


def test_lora_with_new_tokens_then_merge_in_one_command(tiny, export: Path, tmp_path: Path) -> None:
    """A checkpoint without the control tokens: LoRA trains the new rows whole (modules_to_save),
    the adapter folder carries the grown config, and `--merge` merges it at two strengths, each
    output a run whose parent is the train run."""
    from transformers import AutoModelForImageTextToText

    bare = without_control_tokens(tiny["qwen2.5-vl"], tmp_path / "bare")
    reg = tmp_path / "r.db"
    recipe = _recipe(tmp_path / "r.yaml", model=bare, data=export, finetune="lora",
                     lora={"r": 4, "alpha": 8})
    docthink("train", recipe, *FAST, "--merge", "0.25,0.5", "--runs-dir", tmp_path / "runs",
             "--registry", reg)
    registry = Registry(reg)
    (train,) = registry.list(kind="train")
    (merge,) = registry.list(kind="merge")
    assert merge.parents == (train.id,) and merge.metrics["alphas"] == [0.25, 0.5]
    model_dir = Path(train.run_dir) / "model"
    base = AutoModelForImageTextToText.from_pretrained(bare).get_input_embeddings().weight
    assert (model_dir / "adapter_config.json").is_file()
    grown = json.loads((model_dir / "config.json").read_text())["text_config"]["vocab_size"]
    assert grown == base.shape[0] + 3
    for alpha in (0.25, 0.5):
        merged = AutoModelForImageTextToText.from_pretrained(Path(train.run_dir) / f"merged-{alpha:g}")
        rows = merged.get_input_embeddings().weight
        assert rows.shape == (base.shape[0] + 3, base.shape[1])
        assert torch.equal(rows, merged.get_output_embeddings().weight)  # still tied
        assert 0 < (rows[: base.shape[0]] - base).abs().max() < 0.05
    assert train.metrics["steps"] == 3


def test_accelerate_config_is_passed_through(tiny, export: Path, tmp_path: Path) -> None:
    """With launch.accelerate_config the training runs under `accelerate launch --config_file`
    (here a one-process CPU config) and its result comes back into the run record."""
    config = tmp_path / "accelerate.yaml"
    config.write_text(yaml.safe_dump({
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "NO", "num_processes": 1,
        "num_machines": 1, "machine_rank": 0, "mixed_precision": "no", "use_cpu": True,
    }))
    reg = tmp_path / "r.db"
    recipe = _recipe(tmp_path / "r.yaml", model=tiny["qwen2.5-vl"], data=export,
                     out=tmp_path / "out", launch={"accelerate_config": config})
    docthink("train", recipe, *FAST, "--runs-dir", tmp_path / "runs", "--registry", reg)
    (run,) = Registry(reg).list(kind="train")
    assert run.status == "ok" and run.metrics["steps"] == 3
    log = (Path(run.run_dir) / "run.log").read_text()
    assert f"accelerate.commands.launch --config_file {config}" in log
    assert json.loads((tmp_path / "out" / "result.json").read_text())["metrics"]["steps"] == 3
    assert (tmp_path / "out" / "model" / "docthink_run.json").is_file()


def test_checkpoints_resume_only_when_asked(tiny, export: Path, tmp_path: Path) -> None:
    """A second run into the same `out` continues from the newest checkpoint with resume: true,
    and is refused without it (it would otherwise mix two runs' checkpoints silently)."""
    out, reg = tmp_path / "out", tmp_path / "r.db"
    common = ("--runs-dir", tmp_path / "runs", "--registry", reg)
    first = _recipe(tmp_path / "a.yaml", model=tiny["qwen2.5-vl"], data=export, out=out,
                    save_steps=2, save_total_limit=5, learning_rate=1e-3, max_steps=4)
    docthink("train", first, *common)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2", "checkpoint-4"]
    again = CliRunner().invoke(app, ["train", str(first), "--max-steps", "6",
                                     *map(str, common)])
    assert again.exit_code == 2 and "set resume: true" in again.output
    resumed = _recipe(tmp_path / "b.yaml", model=tiny["qwen2.5-vl"], data=export, out=out,
                      save_steps=2, save_total_limit=5, learning_rate=1e-3, max_steps=6,
                      resume=True)
    docthink("train", resumed, *common)
    steps = [json.loads(line)["step"] for line in
             (out / "logs" / "train_log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]  # the second run logged only steps 5 and 6
    runs = Registry(reg).list(kind="train")
    assert [r.status for r in runs] == ["ok", "failed", "ok"]
    assert runs[0].metrics["steps"] == 6
