"""`docthink plan`: the requests, images and tokens a run will spend, before it runs.

Checked against real runs (the offline teacher end to end; a tiny local Qwen-VL checkpoint for
the image-token rule), against transformers' own resize for the Qwen rules, and against the
reference config's estimate for the paper's run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docthink.core.errors import UserError
from docthink.core.parts import PageRef
from docthink.models.base import UsageMeter
from docthink.plan.bill import Plan, PlanOptions, Rates, StagePlan
from docthink.plan.tokens import FAMILIES, VisionReader, family_rule, processor_rule
from docthink.runs import Registry
from tests.helpers import docthink


def plan_json(*args: str | Path) -> dict:
    return json.loads(docthink("plan", "synth", *args, "--json"))


def stages(plan: dict) -> dict[str, dict]:
    return {s["stage"]: s for s in plan["stages"]}


@pytest.mark.parametrize("shard_size", [128, 3])
def test_plan_counts_the_runs_requests_exactly_and_its_tokens_within_ten_percent(
    sample_corpus, tmp_path: Path, shard_size: int
) -> None:
    """The plan of an offline-teacher run, then the run: the same requests per stage, prompt and
    output tokens within 10% (calibrated on half the questions), and the data card shows them
    side by side, summed over the run's shards (one, or three of up to 3 questions; the
    calibration sample runs in shards too)."""
    corpus, questions = sample_corpus
    out, registry = tmp_path / "out", tmp_path / "registry.sqlite"
    args = ("--corpus", corpus, "--questions", questions, "--out", out,
            "--shard-size", str(shard_size))
    bounds = stages(plan_json(*args))  # limits only: no model is called
    plan = plan_json(*args, "--calibrate", "4", "--throughput", "2000", "--price-in", "0.5",
                     "--price-out", "2")
    assert json.loads((out / "plan.json").read_text()) == plan
    docthink("synth", *args, "--registry", registry, "--runs-dir", tmp_path / "runs")

    (record,) = Registry(registry).list(kind="synth")
    summary = json.loads((Path(record.run_dir) / "summary.json").read_text())
    assert summary["shards"]["total"] == (1 if shard_size == 128 else 3)
    usage = summary["data_usage"]
    planned = stages(plan)
    assert set(planned) == set(usage) == {"evidence", "answer_vision", "answer_text"}
    for stage, row in planned.items():
        assert row["requests"] == bounds[stage]["requests"] == usage[stage]["requests"], stage
        assert row["requests_basis"] in ("exact",)
        assert bounds[stage]["output_tokens"] >= usage[stage]["completion_tokens"]
    # the teacher reads the text layer: its evidence prompts are counted exactly
    assert planned["evidence"]["prompt_tokens"] == usage["evidence"]["prompt_tokens"]
    for key, spent in (("prompt_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
        total = sum(u[spent] for u in usage.values())
        assert abs(plan["totals"][key] - total) <= 0.1 * total, (key, plan["totals"][key], total)
    assert plan["calibration"]["questions"] == 4
    tokens = plan["totals"]["prompt_tokens"] + plan["totals"]["output_tokens"]
    assert plan["totals"]["gpu_hours"] == pytest.approx(tokens / 2000 / 3600, abs=1e-3)
    assert plan["totals"]["cost_usd"] == pytest.approx(
        (plan["totals"]["prompt_tokens"] * 0.5 + plan["totals"]["output_tokens"] * 2) / 1e6,
        abs=0.01)

    assert [(b["stage"], b["requests"]) for b in summary["planned_beside_actual"]] == [
        (stage, [row["requests"], usage[stage]["requests"]]) for stage, row in planned.items()]
    card = (out / "card.md").read_text()
    assert "The plan was made for recipe" not in card  # the same arguments, the same recipe
    evidence = usage["evidence"]["prompt_tokens"]
    assert (f"| evidence | {planned['evidence']['requests']:,} | "
            f"{usage['evidence']['requests']:,} | {evidence:,} | {evidence:,} | 1.00 |") in card


def test_a_question_without_its_source_in_context_makes_answer_counts_bounds(
    sample_corpus, tmp_path: Path
) -> None:
    """Such a question drops when no page scores above the threshold, so the plan cannot promise
    its answer request: the counts become upper bounds, and the plan says why."""
    corpus, questions = sample_corpus
    rows = [json.loads(line) for line in questions.open()]
    rows[0]["context_pages"] = [p for p in range(1, 4) if p not in rows[0]["source_pages"]]
    rows[0]["source_pages"] = []
    edited = tmp_path / "q.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = plan_json("--corpus", corpus, "--questions", edited, "--out", tmp_path / "out")
    assert {s["requests_basis"] for s in plan["stages"][1:]} == {"at most"}
    assert any("upper bounds" in note for note in plan["notes"])
    whole = plan_json("--corpus", corpus, "--questions", questions, "--out", tmp_path / "o2")
    assert stages(plan)["evidence"]["requests"] == (
        stages(whole)["evidence"]["requests"] - _pages_of(corpus, rows[0]["doc_id"])
        + len(rows[0]["context_pages"]))


def _pages_of(corpus: Path, doc_id: str) -> int:
    from docthink.corpus.corpus import Corpus

    with Corpus.open(corpus) as c:
        return c.n_pages(doc_id)


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
def test_image_rule_is_transformers_resize(family: str) -> None:
    """Token counts equal transformers' smart_resize over page shapes, tiny to huge."""
    resize = pytest.importorskip("transformers.models.qwen2_vl.image_processing_qwen2_vl")
    rule = FAMILIES[family]
    f = rule.patch * rule.merge
    for width, height in [(1280, 720), (989, 1280), (905, 1280), (1400, 1400), (30, 40),
                          (5000, 7000), (1280, 64), (100, 3000)]:
        h, w = resize.smart_resize(height, width, factor=f, min_pixels=rule.min_pixels,
                                   max_pixels=rule.max_pixels)
        assert rule.resized(width, height) == (w, h), (width, height)
        assert rule.tokens(width, height) == (w // f) * (h // f)
    assert FAMILIES["qwen3-vl"].tokens(1280, 720) == 40 * 22
    assert FAMILIES["qwen2.5-vl"].tokens(1280, 720) == 46 * 26


def test_rules_come_from_the_model_name_or_its_processor_files(tmp_path: Path) -> None:
    assert family_rule("Qwen/Qwen3-VL-32B-Instruct-FP8") is FAMILIES["qwen3-vl"]
    assert family_rule("Qwen/Qwen2.5-VL-7B-Instruct") is FAMILIES["qwen2.5-vl"]
    assert family_rule("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8") is None
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
         "merge_size": 2}))
    rule = processor_rule(hub)
    assert (rule.patch, rule.merge, rule.min_pixels, rule.max_pixels) == (16, 2, 65536, 16777216)
    (hub / "preprocessor_config.json").write_text(json.dumps({"patch_size": 14, "max_pixels": 9}))
    with pytest.raises(UserError, match=r"preprocessor_config.json: no merge_size"):
        processor_rule(hub)
    with pytest.raises(UserError, match="no preprocessor_config.json nor processor_config.json"):
        processor_rule(tmp_path)


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
def test_planned_prompt_tokens_are_what_a_local_qwen_vl_counts(
    family: str, sample_corpus, tmp_path: Path
) -> None:
    """A tiny real checkpoint of each family reads the same vision-answer and evidence requests
    the plan counts (its rule from the checkpoint's processor file, its tokenizer, which also
    counts the chat template's tokens): the model's prompt_tokens equal the plan's."""
    pytest.importorskip("torch")
    import asyncio

    from docthink.corpus.corpus import Corpus
    from docthink.corpus.policy import RenderPolicy
    from docthink.models.local import LocalModel, LocalModelSpec
    from docthink.plan.tokens import placeholder, text_counter
    from docthink.synth import requests as rq
    from docthink.testing import build_tiny_vlm

    checkpoint = build_tiny_vlm(tmp_path / "tiny", family)
    model = LocalModel(LocalModelSpec(path=checkpoint, device="cpu", dtype="float32"))
    corpus_dir, _ = sample_corpus
    policy = RenderPolicy()
    with Corpus.open(corpus_dir) as corpus:
        doc = next(iter(corpus.documents.values()))
        refs = doc.pages()[:3]
        images = corpus.ensure_images(refs, policy)
        text = text_counter(checkpoint)
        import math

        def pixels(ref: PageRef) -> tuple[int, int]:
            w, h = corpus.document(ref.doc_id).page_sizes[ref.page - 1]
            scale = policy.scale(w, h)
            return math.ceil(w * scale), math.ceil(h * scale)

        reader = VisionReader(processor_rule(checkpoint), family, pixels, text, family)
        for image, ref in zip(images, refs, strict=True):
            assert (image.path.exists() and pixels(ref) == _size(image.path)), ref
        sent = [rq.vision_answer_request(images, "What is on page two?", temperature=0,
                                         max_tokens=2),
                rq.text_answer_request("Page 1:\n\"Revenue 877\"", "What was revenue?",
                                       temperature=0, max_tokens=2)]
        counted = [rq.vision_answer_request([placeholder(r, policy.mime) for r in refs],
                                            "What is on page two?", temperature=0, max_tokens=2),
                   sent[1]]

        async def run() -> list[int]:
            return [(await model.complete(r)).usage.prompt_tokens for r in sent]

        actual = asyncio.run(run())
    planned = [reader.prompt_tokens(r) for r in counted]
    assert planned == actual


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_the_reference_configs_estimate(tmp_path: Path) -> None:
    """The reference config's own estimate for the paper-2 run: 18K questions -> 437K images
    (about 24 pages a question) -> 390M tokens (about 450M with the traces). The plan of that
    run under preset paper2-code (Qwen3-VL at the reference's 1280-pixel cap), with 16:9 pages
    (1280 x 720 once rendered), counts 437K evidence images and 385M image tokens: 1.3% under
    the estimate's 390M, whose figure is images only; its full evidence prompts (system prompt,
    source notes, questions, chat template) come to more, as the test prints."""
    from docthink.plan.synth import _evidence
    from docthink.plan.tokens import text_counter
    from docthink.questions.rows import Question
    from docthink.recipe import load_recipe
    from docthink.synth.recipe import SynthRecipe

    recipe = load_recipe(SynthRecipe, None, {"corpus": tmp_path, "questions": tmp_path / "q.jsonl",
                                             "out": tmp_path}, preset="paper2-code")
    assert recipe.image.max_side == 1280 and recipe.trace.top_k == 24
    spec = recipe.models.evidence
    assert spec.kind == "openai"
    rule = family_rule(spec.model)
    assert rule is FAMILIES["qwen3-vl"]
    # 18,000 questions whose contexts average 437K / 18K = 24.28 pages
    questions = []
    for i in range(18_000):
        n = 24 + (i % 100 < 28)  # 28% of questions see 25 pages, the rest 24: 24.28 on average
        pages = tuple(PageRef(f"d{i}", p) for p in range(1, n + 1))
        questions.append(Question(f"q{i}", f"d{i}", f"What was the revenue in year {i}?",
                                  pages[:1], pages))
    reader = VisionReader(rule, spec.model, lambda ref: (1280, 720), text_counter(None), "chars")
    evidence = _evidence(recipe, questions, reader, None)
    assert evidence.requests == evidence.images == 437_040
    image_tokens = evidence.images * FAMILIES["qwen3-vl"].tokens(1280, 720)
    assert 380e6 <= image_tokens <= 390e6
    print(f"evidence images {evidence.images:,}; image tokens {image_tokens / 1e6:.0f}M; "
          f"full prompts {evidence.prompt_tokens / 1e6:.0f}M "
          f"({evidence.prompt_tokens / 390e6:.2f}x the estimate's 390M)")
    assert evidence.prompt_tokens > image_tokens


def test_a_plan_reads_back_and_sets_costs(tmp_path: Path) -> None:
    stage = StagePlan("evidence", "m", 10, "exact", 10, 1, 5000, "exact", 1000, "limit")
    plan = Plan("synth", "abc", 2, 0, 5, [stage], Rates(1000.0, "stated", 1.0, 4.0), ["n"])
    plan.write(tmp_path / "plan.json")
    back = Plan.from_json(json.loads((tmp_path / "plan.json").read_text()))
    assert back == plan
    assert plan.gpu_hours() == pytest.approx(6000 / 1000 / 3600)
    assert plan.cost() == pytest.approx((5000 * 1 + 1000 * 4) / 1e6)
    meter = UsageMeter(requests=10, prompt_tokens=5200, completion_tokens=900)
    (row,) = plan.beside({"evidence": meter})
    assert (row.requests, row.prompt_tokens, row.output_tokens) == ((10, 10), (5000, 5200),
                                                                    (1000, 900))
    rates = PlanOptions(gpus=2, price_in=1.0, price_out=2.0).rates((7200, 2.0, 4))
    assert rates.throughput == 1800.0 and "4 calibration questions" in rates.throughput_basis
    assert "GPU-hours" in plan.table() and "$0.01" in plan.table()
