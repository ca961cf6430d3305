"""SFT throughput and peak memory: docthink's TRL path vs a bare torch loop, same model, same batch.

    python benchmarks/bench_train_gpu.py [--steps 6] [--pages 16] [--max-pixels 1003520]
    python benchmarks/bench_train_gpu.py --tiny        # the factory's tiny model, on CPU, to check it

A randomly initialised Qwen2.5-VL at Qwen2.5-VL-3B-Instruct's shapes (3.75B parameters; 36 text
layers of width 2048, a 32-layer vision tower), bf16 weights and compute, full fine-tuning with
AdamW and gradient checkpointing, trained on one 16-page example made by docthink's exporter
(pages 906x1280 like the corpus' default render, `Page N:` lines, a `<cot>` system message, a
16-page trace). The processor is the tiny factory's (its trained-on-the-spot tokenizer, so text
costs more tokens than Qwen's), with the image processor set to `--max-pixels` per page
(default 1280*28*28, about 1,280 image tokens a page).

Reported, each over the steps after the first two (warm-up): sequence length, tokens/s, seconds
per step, and peak GPU memory (`torch.cuda.max_memory_allocated`; peak RSS on CPU) for
  docthink  `docthink.train.sft.make_trainer` + `fit`: TRL's SFTTrainer, its collator, loss on
            the answer only (what `docthink train` runs),
  bare      a hand-written loop over the same collated batch: forward, backward, AdamW step
            (the floor: TRL's and the Trainer's overhead is the difference).
Goal: docthink >= 0.9x the bare loop's tokens/s at no more peak memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN25_VL_3B = {
    "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
             "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 128000,
             "rope_theta": 1000000.0, "vocab_size": 151936, "tie_word_embeddings": True,
             "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
    "vision": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
               "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
               "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
               "hidden_act": "silu"},
}  # fmt: skip


def build_example(root: Path, pages: int, size: tuple[int, int]) -> Path:
    """A TRL export of one trace example over `pages` noisy page images."""
    import numpy as np
    from PIL import Image

    from docthink.export import trace_example, write_export

    store = root / "store"
    store.mkdir(parents=True)
    rng = np.random.default_rng(0)
    keys = []
    for i in range(pages):
        key = (f"{i:064x}", ".png")
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(store / f"{key[0]}{key[1]}", compress_level=1)
        keys.append(key)
    trace = "\n\n".join(f'Page {i}:\n"Revenue in {2000 + i} was {i * 37} million euros; the '
                        f'table lists {i * 3} plants."' for i in range(1, pages + 1))  # fmt: skip
    example = trace_example("bench", keys, "What was the total revenue over all years?", trace,
                            "4,624 million euros", branch="text", placement="system",
                            page_index="Page {i}:")  # fmt: skip
    write_export([example], "trl", lambda k: store / f"{k[0]}{k[1]}", root / "export")
    return root / "export"


def build_model(args: argparse.Namespace, root: Path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLConfig

    from docthink.testing import build_tiny_vlm

    tiny = build_tiny_vlm(root / "tiny")
    processor = AutoProcessor.from_pretrained(tiny)
    if args.tiny:
        return AutoModelForImageTextToText.from_pretrained(tiny), processor
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in
           ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>")}
    config = Qwen2_5_VLConfig(
        text_config={**QWEN25_VL_3B["text"], "eos_token_id": ids["<|im_end|>"]},
        vision_config=QWEN25_VL_3B["vision"], tie_word_embeddings=True,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    processor.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": args.max_pixels}
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    return model, processor


def peak_memory_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class StepClock:
    """Per-step wall times (synchronised with the GPU) as a TrainerCallback."""

    def __init__(self) -> None:
        import torch
        from transformers import TrainerCallback

        self.times: list[float] = []
        clock = self

        def sync() -> float:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return time.perf_counter()

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                clock.start = sync()

            def on_step_end(self, args, state, control, **kw):
                clock.times.append(sync() - clock.start)

        self.sync = sync
        self.callback = Callback()


def summary(name: str, times: list[float], tokens: int) -> dict[str, float]:
    timed = times[2:] if len(times) > 2 else times
    step = statistics.median(timed)
    return {"name": name, "tokens": tokens, "s_per_step": round(step, 3),
            "tokens_per_s": round(tokens / step, 1), "peak_memory_gb": round(peak_memory_gb(), 2)}


def run_docthink(model, processor, export: Path, out: Path, args):
    import torch

    from docthink.train.data import mix, read_export
    from docthink.train.recipe import TrainRecipe, resolve
    from docthink.train.sft import fit, make_trainer
    from docthink.train.tokens import add_control_tokens

    recipe = resolve(TrainRecipe(
        model="random-init", data=export, max_steps=args.steps, batch_size=1, grad_accum=1,
        learning_rate=5e-6, warmup=0, gradient_checkpointing=not args.tiny, logging_steps=1,
        trl_args={"dataloader_num_workers": 0},
    ), cuda=torch.cuda.is_available())  # fmt: skip
    rows, _ = mix(read_export(export), recipe.mixture, recipe.seed)
    tokens = add_control_tokens(model, processor)
    trainer = make_trainer(model, processor, rows * args.steps, recipe, out,
                           logging.getLogger("bench"), tokens)
    clock = StepClock()
    trainer.add_callback(clock.callback)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    reset_peak()
    fit(trainer, out)
    result = summary("docthink", clock.times, int(batch["attention_mask"].sum()))
    return result, batch, trainer


def run_bare(model, batch, args) -> dict[str, float]:
    import torch

    model.train()
    if not args.tiny:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-6)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    clock = StepClock()
    reset_peak()
    times = []
    for _ in range(args.steps):
        start = clock.sync()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(clock.sync() - start)
    return summary("bare", times, int(batch["attention_mask"].sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the factory's tiny model, on CPU")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--pages", type=int, default=16)
    parser.add_argument("--max-pixels", type=int, default=1280 * 28 * 28)
    args = parser.parse_args()
    import torch

    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no GPU: run with --tiny to check the script on CPU")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export = build_example(root, args.pages, (906, 1280) if not args.tiny else (90, 128))
        model, processor = build_model(args, root)
        n_params = sum(p.numel() for p in model.parameters())
        docthink_result, batch, trainer = run_docthink(model, processor, export, root / "out", args)
        del trainer  # frees TRL's optimizer state before the bare loop builds its own
        gc.collect()
        model.zero_grad(set_to_none=True)
        bare_result = run_bare(model, batch, args)
    ratio = docthink_result["tokens_per_s"] / bare_result["tokens_per_s"]
    report = {"device": device, "parameters": n_params, "pages": args.pages,
              "max_pixels": args.max_pixels, "steps": args.steps,
              "docthink": docthink_result, "bare": bare_result,
              "tokens_per_s_ratio": round(ratio, 3)}  # fmt: skip
    print(json.dumps(report, indent=2))
    print(f"{device}: {n_params / 1e9:.2f}B parameters, {docthink_result['tokens']} tokens/example; "
          f"docthink {docthink_result['tokens_per_s']} tokens/s, peak "
          f"{docthink_result['peak_memory_gb']} GB; bare loop {bare_result['tokens_per_s']} tokens/s, "
          f"peak {bare_result['peak_memory_gb']} GB; ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
