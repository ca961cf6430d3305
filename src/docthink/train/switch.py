"""Is the `<cot>` switch learned? Ask a trained checkpoint the same prompts twice, with `<cot>` as
the system message and with no token, and count the answers that open a `<think>` block.

Greedy decoding, the pages opened as in training (same downscaling), the token taken out of each
row wherever the export put it, so both arms see identical pages and question."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docthink.core.vocab import COT, THINK_CLOSE, THINK_OPEN
from docthink.train.data import TrainRow, open_page, without_token


@dataclass(frozen=True)
class Arm:
    n: int
    opens_think: int  # the answer starts with <think>
    closes_think: int  # ... and closes it, with text after </think>
    mentions_think: int  # <think> anywhere in the answer
    p_thinks: tuple[float, ...]  # probability of <think> as the first token, per prompt

    @property
    def rate(self) -> float:
        return self.opens_think / self.n

    @property
    def p_think(self) -> float:
        return sum(self.p_thinks) / self.n


@dataclass(frozen=True)
class SwitchReport:
    with_cot: Arm
    without_cot: Arm
    samples: list[dict[str, str]] = field(default_factory=list)  # the first few generations

    def as_dict(self) -> dict[str, Any]:
        def arm(a: Arm) -> dict[str, Any]:
            return {"n": a.n, "opens_think": a.opens_think, "closes_think": a.closes_think,
                    "mentions_think": a.mentions_think, "rate": round(a.rate, 4),
                    "p_think": round(a.p_think, 4)}

        return {"with_cot": arm(self.with_cot), "without_cot": arm(self.without_cot)}


def _prompt(messages: list[dict[str, Any]], images: Sequence[Path], max_pixels: int | None,
            cot: bool) -> list[dict[str, Any]]:
    pages = iter(images)
    filled = [
        {**m, "content": [
            {"type": "image", "image": open_page(next(pages), max_pixels)} if p["type"] == "image"
            else p for p in m["content"]
        ]}
        for m in messages
    ]
    system = [{"role": "system", "content": [{"type": "text", "text": COT}]}] if cot else []
    return [*system, *filled]


def _generate(model: Any, processor: Any, messages: list[dict[str, Any]],
              max_new_tokens: int, think_id: int) -> tuple[str, float]:
    """The greedy answer, and the probability the model gives `<think>` as its first token."""
    import torch

    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    new = out.sequences[0, inputs["input_ids"].shape[1]:]
    p_think = torch.softmax(out.scores[0][0].float(), dim=-1)[think_id].item()
    # the control tokens are normal tokens: skipping special ones keeps them, drops <|im_end|>
    return processor.tokenizer.decode(new, skip_special_tokens=True), p_think


def _arm(answers: list[tuple[str, float]]) -> Arm:
    texts = [t for t, _ in answers]
    opens = [t.lstrip().startswith(THINK_OPEN) for t in texts]
    closed = [o and THINK_CLOSE in t and t.split(THINK_CLOSE, 1)[1].strip() != ""
              for o, t in zip(opens, texts)]
    p_thinks = tuple(p for _, p in answers)
    return Arm(len(texts), sum(opens), sum(closed), sum(THINK_OPEN in t for t in texts), p_thinks)


def measure_switch(
    model_dir: Path,
    rows: Sequence[TrainRow],
    *,
    max_new_tokens: int = 48,
    max_pixels: int | None = None,
    keep_samples: int = 4,
) -> SwitchReport:
    """Generate for every row with and without `<cot>`; count the answers opening `<think>`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    think_id = processor.tokenizer.convert_tokens_to_ids(THINK_OPEN)
    with_cot, without = [], []
    for row in rows:
        prompt = without_token(row)
        for cot, answers in ((True, with_cot), (False, without)):
            messages = _prompt(prompt, row.images, max_pixels, cot)
            answers.append(_generate(model, processor, messages, max_new_tokens, think_id))
    samples = [{"id": r.id, "with_cot": a[0], "without_cot": b[0]}
               for r, a, b in list(zip(rows, with_cot, without))[:keep_samples]]
    return SwitchReport(_arm(with_cot), _arm(without), samples)
