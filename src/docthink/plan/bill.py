"""A cost plan: what a run will send, stage by stage, and what that costs at stated rates.

Counts that the inputs fix (requests per question and page, images, the prompts' own tokens) are
exact; what depends on the models' replies (which questions keep a trace, how many pages it keeps,
how long replies are) is either bounded by the recipe's limits or measured on a calibration sample
and extrapolated. Each figure says which (`basis`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from docthink.models.base import UsageMeter

Basis = Literal["exact", "at most", "estimate", "limit", "measured"]
MARKS: dict[Basis, str] = {"exact": "", "at most": "<= ", "limit": "<= ", "estimate": "~",
                           "measured": "~"}


@dataclass(frozen=True)
class StagePlan:
    stage: str  # evidence, answer_vision, answer_text, judge (the data card's usage names)
    model: str
    requests: int
    requests_basis: Basis  # exact, or at most (a question may drop before this stage)
    images: int  # images sent over all requests
    max_images_per_request: int
    prompt_tokens: int
    prompt_basis: Basis  # exact; limit or at most (traces at the limits); estimate; measured
    output_tokens: int
    output_basis: Basis  # limit (max_tokens per request) or measured

    @property
    def images_per_request(self) -> float:
        return self.images / self.requests if self.requests else 0.0

    @property
    def prompt_per_request(self) -> float:
        return self.prompt_tokens / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Beside:
    """A stage's (planned, actual) figures."""

    stage: str
    requests: tuple[int, int]
    prompt_tokens: tuple[int, int]
    output_tokens: tuple[int, int]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Rates:
    """What the user states (or calibration measured): tokens a GPU processes per second, and
    API prices in USD per million prompt and output tokens."""

    throughput: float | None = None  # prompt + output tokens per second per GPU
    throughput_basis: str = "stated"
    price_in: float | None = None
    price_out: float | None = None


@dataclass(frozen=True)
class PlanOptions:
    """What `docthink plan` takes besides the recipe."""

    processor: Path | None = None  # a model folder with preprocessor_config.json (tokenizer.json)
    calibrate: int = 0  # questions to run for real first (0: none)
    throughput: float | None = None  # stated tokens/s per GPU; wins over the measured one
    gpus: int = 1  # GPUs serving the calibration run (to turn its speed into a per-GPU rate)
    price_in: float | None = None
    price_out: float | None = None

    def rates(self, spent: tuple[int, float, int] | None) -> Rates:
        """The rates: stated, or the calibration's (tokens, seconds, questions) speed."""
        if self.throughput is not None or spent is None:
            return Rates(self.throughput, "stated", self.price_in, self.price_out)
        tokens, seconds, questions = spent
        return Rates(round(tokens / seconds / self.gpus, 1),
                     f"measured on {questions} calibration questions, {self.gpus} GPU(s)",
                     self.price_in, self.price_out)


@dataclass
class Plan:
    command: str  # synth or questions
    recipe_hash: str
    questions: int  # rows in the questions file (synth) or pages and seeds drafted (questions)
    dropped_at_input: int
    pages: int  # distinct pages rendered
    stages: list[StagePlan]
    rates: Rates = field(default_factory=Rates)
    notes: list[str] = field(default_factory=list)
    calibration: dict[str, object] | None = None

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.stages)

    @property
    def images(self) -> int:
        return sum(s.images for s in self.stages)

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.stages)

    @property
    def output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.stages)

    def gpu_hours(self) -> float | None:
        if self.rates.throughput is None:
            return None
        return (self.prompt_tokens + self.output_tokens) / self.rates.throughput / 3600

    def cost(self) -> float | None:
        if self.rates.price_in is None or self.rates.price_out is None:
            return None
        return (self.prompt_tokens * self.rates.price_in
                + self.output_tokens * self.rates.price_out) / 1e6

    def to_json(self) -> dict[str, object]:
        return {
            "command": self.command,
            "recipe_hash": self.recipe_hash,
            "questions": self.questions,
            "dropped_at_input": self.dropped_at_input,
            "pages": self.pages,
            "stages": [{**asdict(s), "images_per_request": round(s.images_per_request, 3),
                        "prompt_tokens_per_request": round(s.prompt_per_request, 1)}
                       for s in self.stages],
            "totals": {"requests": self.requests, "images": self.images,
                       "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                       "gpu_hours": _round(self.gpu_hours(), 3), "cost_usd": _round(self.cost(), 2)},
            "rates": asdict(self.rates),
            "notes": self.notes,
            "calibration": self.calibration,
        }

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Plan:
        """A plan as `to_json` wrote it (the derived per-request figures are left out)."""
        stages = [StagePlan(**{k: v for k, v in s.items()
                               if k not in ("images_per_request", "prompt_tokens_per_request")})
                  for s in row["stages"]]
        return cls(row["command"], row["recipe_hash"], row["questions"], row["dropped_at_input"],
                   row["pages"], stages, Rates(**row["rates"]), row["notes"], row["calibration"])

    def beside(self, usage: Mapping[str, UsageMeter]) -> list[Beside]:
        """Per stage, planned beside what a run's meters counted: requests (cache hits
        included), prompt and output tokens (cache hits cost none)."""
        return [Beside(s.stage, (s.requests, usage[s.stage].requests),
                       (s.prompt_tokens, usage[s.stage].prompt_tokens),
                       (s.output_tokens, usage[s.stage].completion_tokens))
                for s in self.stages if s.stage in usage]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    def table(self) -> str:
        """The plan as people read it."""
        rows = [("stage", "model", "requests", "images/req", "prompt tok/req", "prompt tokens",
                 "output tokens")]
        for s in self.stages:
            rows.append((s.stage, s.model, f"{MARKS[s.requests_basis]}{s.requests:,}",
                         f"{s.images_per_request:.1f} (max {s.max_images_per_request})",
                         f"{s.prompt_per_request:,.0f}",
                         f"{MARKS[s.prompt_basis]}{s.prompt_tokens:,}",
                         f"{MARKS[s.output_basis]}{s.output_tokens:,}"))
        rows.append(("total", "", f"{self.requests:,}", f"{self.images:,} images", "",
                     f"{self.prompt_tokens:,}", f"{self.output_tokens:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        head = (f"plan for docthink {self.command} (recipe {self.recipe_hash[:12]}): "
                f"{self.questions:,} questions in, {self.dropped_at_input} dropped at input, "
                f"{self.pages:,} distinct pages to render")
        lines = [head, ""]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]
        hours, cost = self.gpu_hours(), self.cost()
        lines.append("")
        lines.append(f"GPU-hours: {hours:,.2f} at {self.rates.throughput:,.0f} tokens/s per GPU "
                     f"({self.rates.throughput_basis})" if hours is not None else
                     "GPU-hours: give --throughput (tokens/s per GPU) or --calibrate N")
        lines.append(f"API cost: ${cost:,.2f} at ${self.rates.price_in}/M prompt, "
                     f"${self.rates.price_out}/M output tokens" if cost is not None else
                     "API cost: give --price-in and --price-out (USD per million tokens)")
        legend = ("<= at most (at the recipe's limits), ~ estimated or measured on a sample; "
                  "unmarked: exact")
        lines += ["", legend, *(f"- {n}" for n in self.notes)]
        return "\n".join(lines)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def read_plan(path: Path) -> Plan:
    """A plan.json as `Plan.write` wrote it."""
    return Plan.from_json(json.loads(path.read_text(encoding="utf-8")))


def beside_lines(plan: Plan, usage: Mapping[str, UsageMeter], recipe_hash: str) -> list[str]:
    """Markdown: the plan's figures beside a run's, per stage, with actual / planned."""
    lines = []
    if plan.recipe_hash != recipe_hash:
        other = (f"The plan was made for recipe {plan.recipe_hash[:12]}, not this run's "
                 f"({recipe_hash[:12]}).")
        lines += [other, ""]
    header = ("| stage | requests planned | actual | prompt tokens planned | actual | ratio | "
              "output tokens planned | actual | ratio |")
    lines += [header, "|---|---|---|---|---|---|---|---|---|"]
    for row in plan.beside(usage):
        cells = [f"{row.requests[0]:,}", f"{row.requests[1]:,}"]
        for planned, actual in (row.prompt_tokens, row.output_tokens):
            cells += [f"{planned:,}", f"{actual:,}", f"{actual / planned:.2f}" if planned else "-"]
        lines.append(f"| {row.stage} | " + " | ".join(cells) + " |")
    return lines
