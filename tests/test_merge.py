"""Streaming task arithmetic on tiny real Qwen-VL checkpoints, LoRA adapters and broken inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from docthink.merge.core import merge_checkpoints
from docthink.merge.plan import MergeError
from docthink.merge.safetensors_io import CheckpointError
from tests.merge_models import (
    ADDED,
    VOCAB,
    build,
    qwen3_config,
    qwen25_config,
    save,
    tokenizer_files,
    tuned_from,
)

NEW_TOKENS = ["<cot>", "<think>", "</think>"]
EMBED25, EMBED3 = "model.embed_tokens.weight", "model.language_model.embed_tokens.weight"


@dataclass(frozen=True)
class Pair:
    base: Path
    tuned: Path
    heads: dict[str, str]  # output head -> the base tensor it merges from


@pytest.fixture(scope="module", params=["qwen2.5-vl", "qwen3-vl"])
def pair(request, tmp_path_factory) -> Pair:
    """Base and SFT-like tuned checkpoints (bf16, sharded, 3 added token rows).

    Qwen2.5-VL: untied heads, checkpoint names in the original format (`model.layers.*`).
    Qwen3-VL: the base ties its head to the embedding; the tuned model unties it."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "qwen2.5-vl":
        base_cfg, tuned_cfg = qwen25_config(), qwen25_config(VOCAB + ADDED)
        heads = {"lm_head.weight": "lm_head.weight"}
    else:
        base_cfg, tuned_cfg = qwen3_config(tie=True), qwen3_config(VOCAB + ADDED, tie=False)
        heads = {"lm_head.weight": EMBED3}
    base = build(base_cfg, seed=0)
    save(base, root / "base", files=tokenizer_files([]))
    save(tuned_from(base, tuned_cfg, seed=1), root / "tuned", files=tokenizer_files(NEW_TOKENS))
    return Pair(root / "base", root / "tuned", heads)


def load(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, read by the safetensors library itself."""
    index = folder / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.exists()
        else ["model.safetensors"]
    )
    out = {}
    for name in files:
        with safe_open(folder / name, "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (not a dict)
    return out


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.view(torch.int16), b.view(torch.int16))


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """Spacing of bfloat16 values (8 significant bits) around float64 `x`."""
    _, exp = torch.frexp(x.abs().clamp_min(2.0**-126))
    return torch.ldexp(torch.ones_like(x), exp - 8)


def digest(path: Path) -> str:
    return blake3.blake3(path.read_bytes()).hexdigest()


def test_alphas_0_and_1_reproduce_inputs_and_025_matches_float64(
    pair: Pair, tmp_path: Path
) -> None:
    outs = [tmp_path / "a0", tmp_path / "a025", tmp_path / "a1"]
    report = merge_checkpoints(pair.base, pair.tuned, [0.0, 0.25, 1.0], outs, shard_size=200_000)
    base, tuned = load(pair.base), load(pair.tuned)
    a0, a025, a1 = (load(o) for o in outs)
    assert a0.keys() == a025.keys() == a1.keys() == tuned.keys()
    src = {name: base[pair.heads.get(name, name)] for name in tuned}
    for name, t in tuned.items():
        rows = src[name].shape[0]
        assert same_bits(a1[name], t), name
        assert same_bits(a0[name][:rows], src[name]), name
        assert same_bits(a0[name][rows:], t[rows:]) and same_bits(a025[name][rows:], t[rows:]), name
        b64, t64 = src[name].double(), t[:rows].double()
        ref = b64 + 0.25 * (t64 - b64)
        err = (a025[name][:rows].double() - ref).abs()
        assert (err <= bf16_ulp(ref)).all(), f"{name}: {(err / bf16_ulp(ref)).max():.2f} ulp"
    grown = {g.tensor: (g.base_rows, g.tuned_rows) for g in report.vocab_growth}
    embed = EMBED25 if EMBED25 in tuned else EMBED3
    assert grown == {embed: (VOCAB, VOCAB + ADDED), "lm_head.weight": (VOCAB, VOCAB + ADDED)}
    assert report.stand_ins == {k: v for k, v in pair.heads.items() if k != v}


def test_merged_folder_loads_generates_and_records_its_inputs(pair: Pair, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "merged"
    report = merge_checkpoints(pair.base, pair.tuned, [0.25], [out])
    assert {p.name for p in out.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "merge_recipe.json",
    }
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ):
        assert (out / name).read_bytes() == (pair.tuned / name).read_bytes(), name
    recipe = json.loads((out / "merge_recipe.json").read_text())
    assert recipe["alpha"] == 0.25 and recipe["tuned"]["kind"] == "full"
    assert recipe["digests"] == "blake3"
    assert recipe["base"]["files"] == {p.name: digest(p) for p in pair.base.glob("model*")}
    assert recipe["tuned"]["files"] == {p.name: digest(p) for p in pair.tuned.glob("model*")}
    on_disk = {p.name: digest(p) for p in out.iterdir() if p.name != "merge_recipe.json"}
    assert recipe["outputs"] == on_disk == report.outputs[0].files
    again = merge_checkpoints(pair.base, pair.tuned, [0.25], [tmp_path / "again"])
    assert again.outputs[0].files == report.outputs[0].files  # same inputs, same bytes

    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.bfloat16)
    merged = load(out)["lm_head.weight"]
    assert same_bits(model.lm_head.weight.detach(), merged)  # the untied head is the merged one
    ids = model.generate(
        input_ids=torch.tensor([[1, 5, VOCAB + 1]]), max_new_tokens=3, do_sample=False
    )
    assert ids.shape == (1, 6)


def test_sharded_output_index_matches_what_save_pretrained_writes(
    pair: Pair, tmp_path: Path
) -> None:
    out = tmp_path / "sharded"
    merge_checkpoints(pair.base, pair.tuned, [0.5], [out], shard_size=200_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    n = len(shards)
    assert n > 1 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    tensors = load(out)
    assert index["weight_map"].keys() == tensors.keys()
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in tensors.values()
    )


@pytest.fixture(scope="module")
def lora_case(tmp_path_factory):
    """A PEFT adapter on the Qwen2.5-VL base (names differ: `model.language_model.*` in the
    adapter, `model.*` in the checkpoint), rsLoRA, LoRA on the embedding, a trained head kept
    whole (modules_to_save); and PEFT's own merge_and_unload of it as the reference."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration as Model

    root = tmp_path_factory.mktemp("lora")
    base = save(build(qwen25_config(), seed=0), root / "base")
    cfg = LoraConfig(r=4, lora_alpha=8, use_rslora=True, init_lora_weights=False, lora_dropout=0.0,
                     target_modules=["q_proj", "v_proj", "down_proj", "qkv", "embed_tokens"],
                     modules_to_save=["lm_head"])  # fmt: skip
    peft_model = get_peft_model(Model.from_pretrained(base, dtype=torch.bfloat16), cfg)
    with torch.no_grad():
        head = peft_model.base_model.model.lm_head.modules_to_save["default"].weight
        head += 0.05 * torch.randn(head.shape, generator=torch.Generator().manual_seed(3)).to(
            head.dtype
        )
    peft_model.save_pretrained(root / "adapter")
    merged = PeftModel.from_pretrained(
        Model.from_pretrained(base, dtype=torch.bfloat16), root / "adapter"
    )
    merged.merge_and_unload().save_pretrained(root / "peft_merged")
    return base, root / "adapter", root / "peft_merged"


def test_lora_matches_peft_merge_and_unload(lora_case, tmp_path: Path) -> None:
    base, adapter, peft_merged = lora_case
    report = merge_checkpoints(base, adapter, [1.0, 0.5], [tmp_path / "l1", tmp_path / "l05"])
    merge_checkpoints(base, peft_merged, [0.5], [tmp_path / "ref05"])
    ours1, ours05, peft1, ref05 = (
        load(p) for p in (tmp_path / "l1", tmp_path / "l05", peft_merged, tmp_path / "ref05")
    )
    b = load(base)
    assert ours1.keys() == peft1.keys() == b.keys()
    changed = [n for n in b if not same_bits(b[n], peft1[n])]
    assert (
        "model.layers.0.self_attn.q_proj.weight" in changed
        and "visual.blocks.0.attn.qkv.weight" in changed
    )
    assert EMBED25 in changed and "lm_head.weight" in changed
    for name in b:
        # PEFT rounds an embedding's delta to bf16 before adding it (and the reference at 0.5
        # rounds PEFT's merged model once more), so errors scale with the operands, not the result.
        tolerance = 2 * bf16_ulp(torch.maximum(b[name].double().abs(), peft1[name].double().abs()))
        for ours, ref in ((ours1, peft1), (ours05, ref05)):
            assert ((ours[name].double() - ref[name].double()).abs() <= tolerance).all(), name
    assert report.tuned_kind == "lora"
    assert (
        report.renamed["model.language_model.layers.0.self_attn.q_proj.weight"]
        == "model.layers.0.self_attn.q_proj.weight"
    )
    assert (tmp_path / "l05" / "config.json").read_bytes() == (base / "config.json").read_bytes()


def test_lora_options_that_change_merging_are_rejected(lora_case, tmp_path: Path) -> None:
    base, adapter, _ = lora_case
    dora = tmp_path / "dora"
    shutil.copytree(adapter, dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(CheckpointError, match="use_dora"):
        merge_checkpoints(base, dora, [0.5], [tmp_path / "out"])
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    not (os.environ.get("MERGEKIT_YAML") or shutil.which("mergekit-yaml")),
    reason="mergekit-yaml not found (set MERGEKIT_YAML or put mergekit 0.1.5 on PATH)",
)
def test_agrees_with_mergekit_task_arithmetic(tmp_path: Path) -> None:
    base_model = build(qwen3_config(), seed=0)
    base = save(base_model, tmp_path / "base")
    tuned = save(tuned_from(base_model, qwen3_config(), seed=1), tmp_path / "tuned")
    config = {"merge_method": "task_arithmetic", "base_model": str(base), "parameters": {"normalize": False},
              "models": [{"model": str(tuned), "parameters": {"weight": 0.25}}],
              "dtype": "float32", "out_dtype": "bfloat16"}  # fmt: skip
    (tmp_path / "mk.yaml").write_text(json.dumps(config))  # JSON is YAML
    exe = os.environ.get("MERGEKIT_YAML") or shutil.which("mergekit-yaml")
    subprocess.run([exe, str(tmp_path / "mk.yaml"), str(tmp_path / "mk"), "--no-copy-tokenizer", "--lazy-unpickle"],
                   check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    merge_checkpoints(base, tuned, [0.25], [tmp_path / "ours"])
    ours, theirs = load(tmp_path / "ours"), load(tmp_path / "mk")
    assert ours.keys() == theirs.keys()
    differing = [name for name in ours if not same_bits(ours[name], theirs[name])]
    assert differing == []


def write_pair(
    root: Path, tuned_changes: dict[str, torch.Tensor], drop: str | None = None
) -> tuple[Path, Path]:
    base = {
        "embed_tokens.weight": torch.randn(6, 4),
        "layers.0.w": torch.randn(4, 4),
        "layers.0.b": torch.randn(4),
    }
    base = {k: v.to(torch.bfloat16) for k, v in base.items()}
    tuned = {k: v for k, v in {**base, **tuned_changes}.items() if k != drop}
    for name, tensors in (("base", base), ("tuned", tuned)):
        (root / name).mkdir()
        save_file(tensors, root / name / "model.safetensors", metadata={"format": "pt"})
    return root / "base", root / "tuned"


@pytest.mark.parametrize(
    ("changes", "drop", "expected"),
    [
        (
            {"layers.0.b2": torch.zeros(4, dtype=torch.bfloat16)},
            "layers.0.b",
            r"layers\.0\.b: in base only",
        ),
        (
            {"layers.0.w": torch.zeros(4, 5, dtype=torch.bfloat16)},
            None,
            r"layers\.0\.w: shape \[4, 4\] in base, \[4, 5\]",
        ),
        (
            {"layers.0.w": torch.zeros(5, 4, dtype=torch.bfloat16)},
            None,
            r"layers\.0\.w: shape .* may gain rows",
        ),
        (
            {"layers.0.b": torch.zeros(4, dtype=torch.float16)},
            None,
            r"layers\.0\.b: dtype BF16 in base, F16",
        ),
        (
            {"embed_tokens.weight": torch.zeros(5, 4, dtype=torch.bfloat16)},
            None,
            r"embed_tokens\.weight: shape",
        ),
    ],
    ids=["name", "shape", "rows-outside-vocab", "dtype", "vocab-shrinks"],
)
def test_mismatches_name_the_tensor_and_write_nothing(tmp_path, changes, drop, expected) -> None:
    base, tuned = write_pair(tmp_path, changes, drop)
    with pytest.raises(MergeError, match=expected):
        merge_checkpoints(base, tuned, [0.5], [tmp_path / "out" / "m"])
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_truncated_shard_is_named(tmp_path: Path) -> None:
    base, tuned = write_pair(tmp_path, {})
    data = (tuned / "model.safetensors").read_bytes()
    (tuned / "model.safetensors").write_bytes(data[:-2])
    with pytest.raises(CheckpointError, match=r"tuned/model\.safetensors: tensors end at byte"):
        merge_checkpoints(base, tuned, [0.5], [tmp_path / "out"])


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    base, tuned = write_pair(tmp_path, {"layers.0.b": torch.ones(4, dtype=torch.bfloat16)})
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        merge_checkpoints(base, tuned, [0.5], [out])
    assert (out / "precious.txt").exists()
    merge_checkpoints(base, tuned, [1.0], [out], overwrite=True)
    assert not (out / "precious.txt").exists()
    assert same_bits(load(out)["layers.0.b"], torch.ones(4, dtype=torch.bfloat16))
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []


KILL_SCRIPT = """
import sys
from pathlib import Path
from docthink.merge.core import merge_checkpoints
root = Path(sys.argv[1])
merge_checkpoints(root / "base", root / "tuned", [0.25, 0.5, 0.75], [root / "o1", root / "o2", root / "o3"],
                  chunk_bytes=2**18)
"""


def test_killed_merge_leaves_no_complete_looking_output(tmp_path: Path) -> None:
    big = {f"layers.{i}.w": torch.randn(1024, 1024).to(torch.bfloat16) for i in range(24)}
    write_pair(tmp_path, {k: v + 1 for k, v in big.items()})
    for name in ("base", "tuned"):  # replace the small pair with 48 MB checkpoints
        tensors = {k: v + (name == "tuned") for k, v in big.items()}
        save_file(tensors, tmp_path / name / "model.safetensors", metadata={"format": "pt"})
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)])
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size > 2**20 for p in tmp_path.glob("o1.tmp-*/*.safetensors")):
        assert proc.poll() is None and time.monotonic() < deadline, (
            "merge ended before it could be killed"
        )
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))
    leftovers = list(tmp_path.glob("o1.tmp-*"))
    assert leftovers and not (leftovers[0] / "merge_recipe.json").exists()
    merge_checkpoints(
        tmp_path / "base", tmp_path / "tuned", [0.5], [tmp_path / "o1"]
    )  # the leftover does not block
    assert (tmp_path / "o1" / "merge_recipe.json").exists()


def with_configs(base: Path, tuned: Path, base_ties: bool, tuned_ties: bool) -> None:
    (base / "config.json").write_text(json.dumps({"tie_word_embeddings": base_ties}))
    (tuned / "config.json").write_text(
        json.dumps({"text_config": {"tie_word_embeddings": tuned_ties}})
    )


def test_head_the_tuned_config_ties_is_left_out_only_if_the_base_ties_it_too(
    tmp_path: Path,
) -> None:
    head = torch.randn(6, 4).to(torch.bfloat16)
    base, tuned = write_pair(tmp_path, {}, drop="lm_head.weight")
    save_file(
        {**load(base), "lm_head.weight": head},
        base / "model.safetensors",
        metadata={"format": "pt"},
    )
    with_configs(base, tuned, base_ties=True, tuned_ties=True)  # a redundant copy of the tied head
    report = merge_checkpoints(base, tuned, [0.5], [tmp_path / "tied"])
    assert report.dropped == ("lm_head.weight",) and "lm_head.weight" not in load(tmp_path / "tied")
    with_configs(base, tuned, base_ties=False, tuned_ties=True)
    with pytest.raises(
        MergeError,
        match="lm_head.weight: tuned ties it to the embedding but base has a separate head",
    ):
        merge_checkpoints(base, tuned, [0.5], [tmp_path / "untied"])


def test_adapter_adding_token_rows_must_bring_its_config(tmp_path: Path) -> None:
    base, _ = write_pair(tmp_path, {})
    (base / "config.json").write_text(json.dumps({"vocab_size": 6}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4})
    )
    embed = torch.randn(8, 4).to(torch.bfloat16)  # resized embedding saved whole by PEFT
    save_file({"base_model.model.embed_tokens.weight": embed},
              adapter / "adapter_model.safetensors", metadata={"format": "pt"})  # fmt: skip
    with pytest.raises(
        MergeError, match=r"adds rows to embed_tokens\.weight but has no config\.json"
    ):
        merge_checkpoints(base, adapter, [0.5], [tmp_path / "out"])
    (adapter / "config.json").write_text(json.dumps({"vocab_size": 8}))
    report = merge_checkpoints(base, adapter, [0.5], [tmp_path / "out"])
    merged = load(tmp_path / "out")
    assert [(g.tensor, g.base_rows, g.tuned_rows) for g in report.vocab_growth] == [
        ("embed_tokens.weight", 6, 8)
    ]
    assert same_bits(merged["embed_tokens.weight"][6:], embed[6:])
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"vocab_size": 8}


def test_adapter_names_never_match_on_a_bare_parameter_name(tmp_path: Path) -> None:
    base, _ = write_pair(tmp_path, {})
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4})
    )
    factors = {"base_model.model.model.layers.0.v.lora_A.weight": torch.randn(2, 4),
               "base_model.model.model.layers.0.v.lora_B.weight": torch.randn(6, 2)}  # fmt: skip
    save_file(factors, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MergeError, match=r"model\.layers\.0\.v\.weight: in adapter only"):
        merge_checkpoints(base, adapter, [0.5], [tmp_path / "out"])


def test_merge_command_records_its_run_with_the_hashes_it_wrote(pair: Pair, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from docthink.cli import app
    from docthink.runs import Registry, artifact_digest

    registry = tmp_path / "registry.sqlite"
    out = tmp_path / "merged-{alpha}"
    result = CliRunner().invoke(
        app,
        ["merge", "--base", str(pair.base), "--tuned", str(pair.tuned), "--alpha", "0.25,0.5",
         "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--registry", str(registry)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    (record,) = Registry(registry).list(kind="merge")
    assert record.status == "ok" and record.recipe["alphas"] == [0.25, 0.5]
    outputs = {Path(a.path).name: a for a in record.artifacts if a.role == "output"}
    assert set(outputs) == {"merged-0.25", "merged-0.5"}
    for name, artifact in outputs.items():
        # the digest recorded from the merge's own hashes equals re-reading the folder
        assert (artifact.digest, artifact.size) == artifact_digest(tmp_path / name)
        assert artifact.algorithm == "blake3"
    inputs = {Path(a.path).name: a.digest for a in record.artifacts if a.role == "input"}
    assert inputs == {"base": artifact_digest(pair.base)[0],
                      "tuned": artifact_digest(pair.tuned)[0]}


def test_a_second_merge_takes_the_input_digests_the_registry_knows(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first merge hashes its inputs as it reads them and the registry keeps those digests
    with the files' fingerprints; the next merge of the same files reads no byte for a digest."""
    from typer.testing import CliRunner

    import docthink.core.hashing
    import docthink.merge.stream
    from docthink.cli import app
    from docthink.runs import Registry, artifact_digest

    monkeypatch.setattr(docthink.core.hashing, "QUIET_NS", 0)  # the fixture's files were just written
    time.sleep(0.05)
    registry = tmp_path / "registry.sqlite"

    def merge(out: str) -> dict[str, str]:
        result = CliRunner().invoke(
            app, ["merge", "--base", str(pair.base), "--tuned", str(pair.tuned), "--alpha", "0.5",
                  "--out", str(tmp_path / out), "--runs-dir", str(tmp_path / "runs"),
                  "--registry", str(registry)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        (record,) = [r for r in Registry(registry).list(kind="merge")
                     if r.recipe["outs"] == [str(tmp_path / out)]]
        return {Path(a.path).name: a.digest for a in record.artifacts}

    first = merge("first")
    hashed: list[Path] = []
    real = docthink.merge.stream._InputHash

    def counting(path: Path) -> object:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(docthink.merge.stream, "_InputHash", counting)
    second = merge("second")
    assert hashed == []
    inputs = {"base": artifact_digest(pair.base)[0], "tuned": artifact_digest(pair.tuned)[0]}
    assert {k: second[k] for k in inputs} == {k: first[k] for k in inputs} == inputs
    assert second["second"] == first["first"] == artifact_digest(tmp_path / "second")[0]


def test_extrapolation_needs_the_flag(tmp_path: Path) -> None:
    """A strength outside [0, 1] is refused, writing nothing and recording no run; with
    --extrapolate it is `base + alpha * (tuned - base)` like any other, and the recipe says so."""
    from typer.testing import CliRunner

    from docthink.cli import app
    from docthink.runs import Registry

    base, tuned = write_pair(tmp_path, {"layers.0.b": torch.ones(4, dtype=torch.bfloat16)})
    registry = tmp_path / "registry.sqlite"
    args = ["merge", "--base", str(base), "--tuned", str(tuned), "--alpha", "-0.5",
            "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"),
            "--registry", str(registry)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "alpha -0.5 is outside [0, 1]" in refused.output
    assert not (tmp_path / "out").exists() and not registry.exists()

    done = CliRunner().invoke(app, [*args, "--extrapolate"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    b = load(base)["layers.0.b"].double()
    expected = b - 0.5 * (1 - b)
    err = (load(tmp_path / "out")["layers.0.b"].double() - expected).abs()
    assert (err <= bf16_ulp(expected)).all()
    (record,) = Registry(registry).list(kind="merge")
    assert record.recipe["extrapolate"] is True and record.recipe["alphas"] == [-0.5]


def test_the_appender_writes_every_byte_whatever_the_path(tmp_path: Path) -> None:
    """Outputs are appended through a pipe (vmsplice + splice): pieces of odd sizes, one larger
    than the pipe, a read-only header and an empty piece land byte for byte, and a buffer reused
    at once after `append` returns does not change what was written. A file splice refuses
    (O_APPEND: EINVAL) gets the same bytes by write(2)."""
    import numpy as np

    from docthink.merge.safetensors_io import Appender

    rng = np.random.default_rng(7)
    pieces = [rng.integers(0, 256, n, dtype=np.uint8) for n in (1, 4095, 3 << 20, 0, 65537)]
    header = memoryview(b"header: read-only bytes")
    for flags, name in ((0, "spliced"), (os.O_APPEND, "appended")):
        path = tmp_path / name
        out = Appender(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flags, 0o644))
        out.append(header)
        expected = bytes(header)
        for piece in pieces:
            out.append(memoryview(piece))
            expected += piece.tobytes()
            piece[:] = 0  # reused at once
        out.close()
        assert path.read_bytes() == expected, name
        spliced = sys.platform == "linux" and flags != os.O_APPEND
        assert out.spliced == (len(expected) - len(header) if spliced else 0), name


def test_the_fused_bf16_kernel_equals_the_numpy_kernel_bit_for_bit() -> None:
    """bf16.py (the compiled loop) against the numpy kernel it replaced for bf16, over every bf16
    bit pattern (NaN, infinities, subnormals, both zeros) as base and as tuned, with a tuned
    checkpoint, a LoRA delta, or both, at strengths inside and outside [0, 1]."""
    import numpy as np

    from docthink.merge.kernel import CODECS, Combiner, numpy_range

    rng = np.random.default_rng(3)
    every = np.arange(1 << 16, dtype=np.uint16)
    base = np.concatenate([every, rng.permutation(every)])
    tuned = np.concatenate([rng.permutation(every), every])
    delta = rng.standard_normal(base.size, dtype=np.float32) * np.float32(1e-2)
    alphas = [0.25, 0.5, 1.0, -0.5, 1.7]
    combiner = Combiner(2)
    with np.errstate(all="ignore"):
        for t, d in ((tuned, None), (None, delta), (tuned, delta)):
            fused = [np.empty_like(base) for _ in alphas]
            reference = [np.empty_like(base) for _ in alphas]
            combiner.combine(CODECS["BF16"], base, t, d, alphas, fused)
            numpy_range(CODECS["BF16"], base, t, d, alphas, reference, 0, base.size)
            for alpha, got, want in zip(alphas, fused, reference, strict=True):
                assert np.array_equal(got, want), (alpha, t is None, d is None)
    combiner.close()


def test_the_fused_bf16_kernel_refuses_arrays_it_would_read_past() -> None:
    """The compiled loop takes raw pointers: arrays of the wrong type, layout or length are
    refused before it runs (a length mismatch would read or write past the smaller array)."""
    import numpy as np

    from docthink.merge import bf16

    base, out = np.arange(8, dtype=np.uint16), np.empty(8, np.uint16)
    bad = {
        "tuned: want a contiguous 1-d uint16": (np.arange(8, dtype=np.int32), None, out),
        "tuned: 4 values for 8": (base[:4], None, out),
        "delta: want a contiguous 1-d float32": (None, np.ones(16, np.float32)[::2], out),
        "out: want a contiguous 1-d uint16": (base, None, np.empty((2, 4), np.uint16)),
        "out: read-only": (base, None, np.frombuffer(bytes(16), np.uint16)),
        "lerp needs tuned values, a delta, or both": (None, None, out),
    }
    for message, (tuned, delta, target) in bad.items():
        with pytest.raises((TypeError, ValueError), match=message):
            bf16.lerp(base, tuned, delta, 0.5, target)
    bf16.lerp(base, base, np.ones(8, np.float32), 0.5, out)  # bf16 0..7 are subnormals, +0.5
    assert np.array_equal(out, np.full(8, 0x3F00, np.uint16))
