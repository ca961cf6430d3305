"""Streaming task arithmetic: `base + alpha * (tuned - base)` for several alphas in one pass."""

from __future__ import annotations

import json
import math
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from docthink.core.errors import OutputExists
from docthink.core.hashing import ALGORITHM, FileDigest, bytes_digest
from docthink.merge.lora import ADAPTER_CONFIG, is_adapter, open_adapter, plan_lora
from docthink.merge.plan import MergeError, MergePlan, TensorPlan, VocabGrowth, plan_full
from docthink.merge.safetensors_io import index_json, open_checkpoint, shard_names
from docthink.merge.stream import KnownDigest, stream

RECIPE_NAME = "merge_recipe.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx")  # fmt: skip
_NEVER_COPIED = {RECIPE_NAME, "trainer_state.json", ADAPTER_CONFIG}


@dataclass(frozen=True)
class MergedOutput:
    alpha: float
    path: Path
    files: dict[str, str]  # file name -> digest (ALGORITHM), every file but merge_recipe.json


@dataclass(frozen=True)
class MergeReport:
    base: Path
    tuned: Path
    tuned_kind: str  # "full" or "lora"
    base_files: dict[str, str]  # weight files (index + shards) -> digest (ALGORITHM)
    tuned_files: dict[str, str]
    # the inputs' digests taken while the files were quiet, with their fingerprints: a registry
    # keeps them to skip hashing the same files next time (docthink.core.hashing.quiet)
    reusable: tuple[FileDigest, ...]
    outputs: tuple[MergedOutput, ...]
    vocab_growth: tuple[VocabGrowth, ...]
    stand_ins: dict[str, str]  # output tensor -> base tensor merged in its place (tied head)
    dropped: tuple[str, ...]  # base tensors left out because the output config ties them
    renamed: dict[str, str]  # adapter tensor -> base tensor, matched by name suffix
    copied_files: dict[str, str]  # file name -> the folder it came from
    n_tensors: int
    bytes_per_output: int
    seconds: float


def merge_checkpoints(
    base: Path,
    tuned: Path,
    alphas: Sequence[float],
    outs: Sequence[Path],
    *,
    shard_size: int = 5 * 2**30,
    chunk_bytes: int = 32 * 2**20,
    progress: bool = False,
    overwrite: bool = False,
    known_digest: KnownDigest = lambda path, fingerprint: None,
) -> MergeReport:
    """Write `base + alpha * (tuned - base)` to `outs[i]` for each `alphas[i]`, reading once.

    `tuned` is a full checkpoint or a PEFT LoRA adapter folder. `chunk_bytes` bounds the
    buffers of one step (inputs, outputs, LoRA delta), hence the memory beyond the interpreter.
    Each output appears at its path only once complete (written under `OUT.tmp-*`, renamed).
    `known_digest(path, fingerprint now)` gives an input's digest when it is known already (a
    registry's, for a file not written since it was hashed): that file is not hashed."""
    start = time.perf_counter()
    base, tuned, outs, alphas = (
        Path(base),
        Path(tuned),
        [Path(o) for o in outs],
        [float(a) for a in alphas],
    )
    _check_arguments(base, tuned, alphas, outs, overwrite)
    base_ckpt = open_checkpoint(base)
    if is_adapter(tuned):
        adapter = open_adapter(tuned)
        plan, tuned_weights, kind = plan_lora(base_ckpt, adapter), adapter.files, "lora"
    else:
        tuned_ckpt = open_checkpoint(tuned)
        plan, tuned_weights, kind = plan_full(base_ckpt, tuned_ckpt), tuned_ckpt.files, "full"
    plan.raise_problems(base, tuned)
    extra = _extra_files(base, tuned, kind)
    _check_lora_config(plan, extra, tuned, kind)
    shards = _layout(plan.tensors, shard_size)
    tmps: list[Path] = []
    try:
        tmps.extend(_make_tmp(out) for out in outs)
        inputs = [*base_ckpt.files, *tuned_weights]
        in_hashes, out_weights = stream(
            shards, tmps, alphas, chunk_bytes, inputs, known_digest, progress
        )
        report = MergeReport(
            base=base,
            tuned=tuned,
            tuned_kind=kind,
            base_files={p.name: in_hashes[p].digest for p in base_ckpt.files},
            tuned_files={p.name: in_hashes[p].digest for p in tuned_weights},
            reusable=tuple(d for d in in_hashes.values() if d.fingerprint is not None),
            outputs=tuple(
                MergedOutput(a, o, files) for a, o, files in zip(alphas, outs, out_weights)
            ),
            vocab_growth=tuple(plan.vocab_growth),
            stand_ins=plan.stand_ins,
            dropped=tuple(plan.dropped),
            renamed=plan.renamed,
            copied_files={name: str(src.parent) for name, src in extra.items()},
            n_tensors=len(plan.tensors),
            bytes_per_output=sum(t.out.nbytes for t in plan.tensors),
            seconds=0.0,
        )
        for tmp, output in zip(tmps, report.outputs):
            _finish_folder(tmp, output, shards, extra, report)
        for tmp, out in zip(tmps, outs):
            _publish(tmp, out, overwrite)
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace(report, seconds=time.perf_counter() - start)


def _check_arguments(
    base: Path, tuned: Path, alphas: list[float], outs: list[Path], overwrite: bool
) -> None:
    for role, folder in (("base", base), ("tuned", tuned)):
        if not folder.is_dir():
            raise MergeError(f"{role} {folder}: no such folder")
    if not outs or len(alphas) != len(outs):
        raise MergeError(f"{len(alphas)} alphas for {len(outs)} output folders")
    if not all(math.isfinite(a) for a in alphas):
        raise MergeError(f"alphas must be finite numbers, got {alphas}")
    if base.resolve() == tuned.resolve():
        raise MergeError(f"{base}: base and tuned are the same folder")
    resolved = [o.resolve() for o in outs]
    if len(set(resolved)) != len(outs):
        raise MergeError(f"output folders repeat: {[str(o) for o in outs]}")
    for out, res in zip(outs, resolved):
        if res in (base.resolve(), tuned.resolve()):
            raise MergeError(f"{out}: is an input of the merge")
        if out.exists() and not overwrite:
            raise OutputExists(f"{out}: exists; pass overwrite=True (--overwrite) to replace it")


def _extra_files(base: Path, tuned: Path, kind: str) -> dict[str, Path]:
    """Config, tokenizer, processor and template files: from the tuned model, or for an
    adapter from the base overlaid with whatever the adapter folder carries."""
    sources = [base, tuned] if kind == "lora" else [tuned]
    files: dict[str, Path] = {}
    for src in sources:
        for path in sorted(src.iterdir()):
            adapter_card = kind == "lora" and src == tuned and path.name == "README.md"
            if path.is_file() and not adapter_card and _copyable(path.name):
                files[path.name] = path
    return files


def _copyable(name: str) -> bool:
    return not (
        name.endswith(_WEIGHT_SUFFIXES) or name.endswith(".index.json") or name in _NEVER_COPIED
    )


def _check_lora_config(plan: MergePlan, extra: dict[str, Path], tuned: Path, kind: str) -> None:
    config = extra.get("config.json")
    if kind == "lora" and plan.vocab_growth and (config is None or config.parent != tuned):
        grown = ", ".join(g.tensor for g in plan.vocab_growth)
        raise MergeError(
            f"{tuned}: the adapter adds rows to {grown} but has no config.json; "
            "save the tuned config and tokenizer into the adapter folder"
        )


def _layout(tensors: list[TensorPlan], shard_size: int) -> list[list[TensorPlan]]:
    """Tensors grouped in order into shards of at most `shard_size` bytes (a larger tensor alone)."""
    shards: list[list[TensorPlan]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.out.nbytes > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.out.nbytes
    return shards


def _make_tmp(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    return tmp


def _finish_folder(
    tmp: Path, output: MergedOutput, shards, extra: dict[str, Path], report: MergeReport
) -> None:
    """Index, copied config/tokenizer files and the recipe, hashes added to `output.files`."""
    names = shard_names(len(shards))
    if len(shards) > 1:
        weight_map = {t.name: name for name, shard in zip(names, shards) for t in shard}
        text = index_json(weight_map, report.bytes_per_output).encode()
        (tmp / "model.safetensors.index.json").write_bytes(text)
        output.files["model.safetensors.index.json"] = bytes_digest(text)
    for name, src in extra.items():
        data = src.read_bytes()
        (tmp / name).write_bytes(data)
        output.files[name] = bytes_digest(data)
    (tmp / RECIPE_NAME).write_text(json.dumps(_recipe(report, output), indent=2) + "\n")


def _recipe(report: MergeReport, output: MergedOutput) -> dict:
    return {
        "method": "task_arithmetic",
        "formula": "base + alpha * (tuned - base)",
        "arithmetic": "float32 (float64 for F64), rounded to nearest even in the tensor's dtype",
        "alpha": output.alpha,
        "digests": ALGORITHM,  # of the files listed below
        "base": {"path": str(report.base), "files": report.base_files},
        "tuned": {
            "path": str(report.tuned),
            "kind": report.tuned_kind,
            "files": report.tuned_files,
        },
        "vocab_growth": [asdict(g) for g in report.vocab_growth],
        "stand_ins": report.stand_ins,
        "dropped": list(report.dropped),
        "renamed": report.renamed,
        "copied_files": report.copied_files,
        "outputs": dict(sorted(output.files.items())),
    }


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    if not overwrite:
        raise OutputExists(
            f"{out}: appeared during the merge; pass overwrite=True (--overwrite) to replace it"
        )
    old = out.with_name(f"{out.name}.old-{secrets.token_hex(4)}")
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)
