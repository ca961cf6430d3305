"""PEFT LoRA adapters as a tuned model: delta = scale * B @ A, never a full tuned checkpoint."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from docthink.merge.plan import (
    HEAD_SUFFIX,
    LoraFactors,
    MergePlan,
    TensorPlan,
    add_pair,
    add_tuned_only,
)
from docthink.merge.safetensors_io import (
    FLOAT_DTYPES,
    Checkpoint,
    CheckpointError,
    TensorRef,
    read_header,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
_FACTOR = re.compile(r"(?P<module>.+)\.(?:lora_(?P<ab>[AB])\.weight|lora_embedding_(?P<eab>[AB]))")
# Options that change what merging means; merge such adapters with PEFT's merge_and_unload.
_UNSUPPORTED = ("use_dora", "fan_in_fan_out", "alpha_pattern", "layer_replication",
                "target_parameters", "trainable_token_indices", "lora_bias")  # fmt: skip
_PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")  # inits that leave the base as it is


@dataclass(frozen=True)
class Adapter:
    root: Path
    files: tuple[Path, ...]
    lora_alpha: float
    rslora: bool
    factors: dict[str, tuple[TensorRef, TensorRef, bool]]  # module path -> (A, B, is_embedding)
    full: dict[
        str, TensorRef
    ]  # tensors saved whole: modules_to_save, biases, embedding base layers

    def scale(self, rank: int) -> float:
        return self.lora_alpha / (math.sqrt(rank) if self.rslora else rank)

    @property
    def scale_rule(self) -> str:
        return "lora_alpha / sqrt(r)" if self.rslora else "lora_alpha / r"


def is_adapter(root: Path) -> bool:
    return (root / ADAPTER_CONFIG).exists()


def open_adapter(root: Path) -> Adapter:
    config_path, weights = root / ADAPTER_CONFIG, root / ADAPTER_WEIGHTS
    config = json.loads(config_path.read_text())
    _check_config(config_path, config)
    if not weights.exists():
        raise CheckpointError(f"{root}: {ADAPTER_CONFIG} without {ADAPTER_WEIGHTS}")
    halves: dict[str, dict[str, TensorRef]] = defaultdict(dict)
    embeddings: set[str] = set()
    full: dict[str, TensorRef] = {}
    for key, ref in read_header(weights).items():
        if not key.startswith(PEFT_PREFIX):
            raise CheckpointError(f"{weights}: tensor {key} lacks the PEFT prefix {PEFT_PREFIX!r}")
        path = key.removeprefix(PEFT_PREFIX)
        if m := _FACTOR.fullmatch(path):
            halves[m["module"]][m["ab"] or m["eab"]] = ref
            if m["eab"]:
                embeddings.add(m["module"])
        elif any(s in path for s in ("lora_", "token_adapter", "modules_to_save", "magnitude")):
            raise CheckpointError(f"{weights}: tensor {key}: unsupported adapter tensor")
        else:
            full[path.replace(".base_layer.", ".")] = ref
    for module, pair in halves.items():
        if pair.keys() != {"A", "B"}:
            raise CheckpointError(f"{weights}: {module} has lora_A or lora_B but not both")
    factors = {m: (p["A"], p["B"], m in embeddings) for m, p in halves.items()}
    return Adapter(root, (config_path, weights), float(config["lora_alpha"]),
                   bool(config.get("use_rslora")), factors, full)  # fmt: skip


def _check_config(path: Path, config: dict) -> None:
    if config.get("peft_type") != "LORA":
        raise CheckpointError(
            f"{path}: peft_type {config.get('peft_type')!r}; only LORA merges here"
        )
    set_options = [k for k in _UNSUPPORTED if config.get(k)]
    if set_options:
        raise CheckpointError(
            f"{path}: unsupported LoRA options {set_options}; merge with PEFT first"
        )
    if config.get("init_lora_weights", True) not in _PLAIN_INITS:
        raise CheckpointError(
            f"{path}: init_lora_weights={config['init_lora_weights']!r} changes the base weights; "
            "convert the adapter to plain LoRA first"
        )


def plan_lora(base: Checkpoint, adapter: Adapter) -> MergePlan:
    """Base tensors with the adapter's deltas and whole tensors attached."""
    plan = MergePlan()
    resolve = _suffix_resolver(base, plan)
    deltas: dict[str, LoraFactors] = {}
    for module, (a, b, embedding) in adapter.factors.items():
        name = resolve(f"{module}.weight")
        if name is not None:
            factors = LoraFactors(a, b, adapter.scale(a.shape[0]), embedding)
            if _check_factors(plan, base.tensors[name], factors):
                deltas[name] = factors
    full: dict[str, TensorRef] = {}
    for path, ref in adapter.full.items():
        name = resolve(path, missing_ok=path.endswith(HEAD_SUFFIX))
        if name is None and path.endswith(HEAD_SUFFIX):
            add_tuned_only(plan, path, ref, base)
        elif name is not None:
            full[name] = ref
    for name, b in base.tensors.items():
        if name in full:
            add_pair(plan, name, b, full[name], deltas.get(name))
        else:
            plan.tensors.append(TensorPlan(name, b, None, deltas.get(name)))
    return plan


def _suffix_resolver(base: Checkpoint, plan: MergePlan):
    """Adapter names follow the model's runtime names (transformers 5 renames modules of
    checkpoints like Qwen2.5-VL's), so an adapter name maps to the unique base name that
    shares its longest dotted suffix. Only leading non-numeric parts (`model.language_model.`)
    may be dropped and at least module and parameter names must remain; an ambiguous or
    absent match is an error."""
    by_suffix: dict[str, list[str]] = defaultdict(list)
    for name in base.tensors:
        parts = name.split(".")
        for k in range(len(parts)):
            by_suffix[".".join(parts[k:])].append(name)

    def resolve(name: str, missing_ok: bool = False) -> str | None:
        parts = name.split(".")
        for k in range(len(parts) - 1):
            if k and parts[k - 1].isdigit():
                break
            found = by_suffix.get(".".join(parts[k:]))
            if found and len(found) == 1:
                if found[0] != name:
                    plan.renamed[name] = found[0]
                return found[0]
            if found:
                plan.problems.append(
                    f"{name}: adapter name matches {len(found)} base tensors, e.g. {found[:3]}"
                )
                return None
        if not missing_ok:
            plan.problems.append(f"{name}: in adapter only")
        return None

    return resolve


def _check_factors(plan: MergePlan, base: TensorRef, f: LoraFactors) -> bool:
    rank = f.a.shape[0]
    out_in = (f.a.shape[1], f.b.shape[0]) if f.embedding else (f.b.shape[0], f.a.shape[1])
    problem = None
    if base.dtype not in FLOAT_DTYPES or len(base.shape) != 2:
        problem = f"LoRA on a {base.dtype} {list(base.shape)} tensor is not supported"
    elif len(f.a.shape) != 2 or len(f.b.shape) != 2 or f.b.shape[1] != rank:
        problem = f"lora factors {list(f.a.shape)}, {list(f.b.shape)} are not (r, in), (out, r)"
    elif out_in != base.shape:
        problem = f"lora factors give {list(out_in)}, base has {list(base.shape)}"
    elif f.a.dtype not in FLOAT_DTYPES or f.b.dtype not in FLOAT_DTYPES:
        problem = f"lora factors of dtype {f.a.dtype}/{f.b.dtype}"
    if problem:
        plan.problems.append(f"{base.name}: {problem}")
    return problem is None
