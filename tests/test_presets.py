"""The shipped presets: each value equals what its source states (the expected values below carry
their source), every value in a preset file names its source, and a preset sits under the recipe
file and the flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docthink.cli import app
from docthink.evals.recipe import EvalRecipe
from docthink.merge.recipe import MergeRecipe
from docthink.questions.recipe import QuestionsRecipe
from docthink.recipe import PRESET_DIR, Recipe, RecipeError, load_recipe, preset_files, preset_names
from docthink.synth.recipe import SynthRecipe
from docthink.train.recipe import TrainRecipe

PLACEHOLDERS: dict[type[Recipe], dict[str, object]] = {
    QuestionsRecipe: {"corpus": "C", "out": "O"},
    SynthRecipe: {"corpus": "C", "questions": "Q.jsonl", "out": "O"},
    TrainRecipe: {"model": "M", "data": "D"},
    MergeRecipe: {"base": "B", "tuned": "T", "outs": ["O"]},
    EvalRecipe: {"data": "samples.json", "documents": "D", "out": "O"},
}
BY_SECTION = {cls.preset_section: cls for cls in PLACEHOLDERS}


def resolved(preset: str, cls: type[Recipe]) -> Recipe:
    return load_recipe(cls, None, {}, defaults=PLACEHOLDERS[cls], preset=preset)


# -- paper 2 as its reference config sets it ------------------------------------------------------

REFERENCE_SYNTH = {
    # lightonai/distilabel @ 255da26, configs/lc_sft/synthetic_cot.py, stage 0
    "models.evidence.model": "Qwen/Qwen3-VL-32B-Instruct-FP8",
    "evidence.temperature": 0.7,
    "evidence.max_tokens": 16384,
    # same file, stage 1: lc_mm_overall_answer_lm_config and the text-only LMConfig
    "models.answer_vision.model": "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8",
    "models.answer_text.model": "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8",
    "answer.temperature": 0.7,
    "answer.max_tokens": 16384,
    "answer.vision_ratio": 0.5,  # data_ratio=1.0 for each branch
    "trace.top_k": 24,  # TOP_K_PAGES = 24
    # pipelines/lc_sft/synthetic_cot.py: MIN_RELEVANCE_SCORE = 1.0; max(score, 6.0) for source pages
    "trace.threshold": 1.0,
    "evidence.source_floor": 6.0,
    # pipelines/lc_sft/synthetic_cot.py convert_to_vision: r < 0.5 prefix or suffix (half each),
    # r < 0.95 system message, else neither token nor trace; images then question, no index line
    "export.placement": {"system": 0.45, "prefix": 0.25, "suffix": 0.25, "none": 0.05},
    "export.page_index": None,
    # utils/image.py _render_image_with_pdfium: scale 2.77 (~200 DPI), max_resolution 1280
    "image.dpi": 200,
    "image.max_side": 1280,
}


def value(recipe: Recipe, dotted: str) -> object:
    for part in dotted.split("."):
        recipe = getattr(recipe, part)
    return recipe


def test_paper2_code_equals_the_reference_config() -> None:
    recipe = resolved("paper2-code", SynthRecipe)
    assert {key: value(recipe, key) for key in REFERENCE_SYNTH} == REFERENCE_SYNTH
    assert [f.stem for f in preset_files("paper2-code")] == ["synth"]


# -- paper 2 as the paper, blog and model card describe it ----------------------------------------

PAPER2_SYNTH = {
    **REFERENCE_SYNTH,
    # blog (lighton.ai, 2026-04-09): "only the top-K (16 pages) are retained"; method.md 1.3:
    # default 16 (the model card and reference config say 24: the preset says so)
    "trace.top_k": 16,
    # paper 1 (method.md 2): a `Page N:` line before each page, +2.8 on MMLBD-C
    "export.page_index": "Page {i}:",
}
PAPER2 = {
    "train": {
        "model": "lightonai/OriOn-Qwen",  # model card: SR1 "extends OriOn-Qwen"
        "learning_rate": 5e-6,  # paper 1 (method.md 2): 5e-6 SFT
        "mixture.traces": "keep",  # method.md 1.5: mixed think + non-think
    },
    "merge": {"alphas": [0.25]},  # method.md 1.6; model card: alpha=0.25
    "eval": {
        "inference.modes": ["plain", "cot"],  # method.md 3: with and without <cot>
        "inference.cot_placement": "system",  # model card: <cot> in the system prompt
        "inference.page_index": "Page {i}:",  # paper 1 (method.md 2): in training and evaluation
    },
}


def test_paper2_equals_the_paper_blog_and_model_card() -> None:
    recipe = resolved("paper2", SynthRecipe)
    assert {key: value(recipe, key) for key in PAPER2_SYNTH} == PAPER2_SYNTH
    for section, expected in PAPER2.items():
        recipe = resolved("paper2", BY_SECTION[section])
        assert {key: value(recipe, key) for key in expected} == expected, section


def test_where_sources_disagree_the_preset_says_so() -> None:
    """K: 16 in the blog, 24 in the reference config and model card; page indices: paper 1 vs
    the reference pipeline. Each line that sets such a value names both sides."""
    for preset, key in (("paper2", "top_k"), ("paper2-code", "top_k"),
                        ("paper2", "page_index"), ("paper2-code", "page_index")):
        text = (PRESET_DIR / preset / "synth.yaml").read_text()
        (line,) = [line for line in text.splitlines() if line.strip().startswith(f"{key}:")]
        assert "DISAGREE" in line, (preset, line)
    k16 = next(line for line in (PRESET_DIR / "paper2" / "synth.yaml").read_text().splitlines()
               if "top_k:" in line)
    assert "16" in k16 and "24" in k16 and "blog" in k16 and "model card" in k16


# -- paper 1 --------------------------------------------------------------------------------------

PAPER1 = {
    "questions": {
        # method.md 2: far (ranks 32-287, up to 16 pages), near (top 32, up to 16), adjacent window
        # (2-17 pages), up to 96 hard negatives, whole document (5-336 pages), mixed 1:1:1:2:2
        "contexts.far.ranks": (32, 288), "contexts.far.pages": (2, 16),
        "contexts.near.ranks": (0, 32), "contexts.near.pages": (2, 16),
        "contexts.adjacent.pages": (2, 17), "contexts.negatives.pages": (2, 96),
        "contexts.negatives.ranks": (0, 96), "contexts.document.pages": (5, 336),
        "contexts.far.weight": 1, "contexts.near.weight": 1, "contexts.adjacent.weight": 1,
        "contexts.negatives.weight": 2, "contexts.document.weight": 2,
        "multi_page.pages": (2, 17),  # method.md 2: seeds of 2-17 pages
        # reference config single_page_q.py: n_questions [('1', 1), ('2', 2), ('3', 2), ('4', 1),
        # ('5', 1)], temperature = 0.7, max_new_tokens=32768, max_dims=(1344, 1344)
        "single_page.spec.n_questions": {1: 1, 2: 2, 3: 2, 4: 1, 5: 1},
        "temperature": 0.7, "max_tokens": 32768, "image.max_side": 1344,
        "models.generator.model": "Qwen/Qwen3-VL-32B-Instruct-FP8",
        # reference config true_multi_page_q.py: the single-page answer stage
        "models.judge.model": "Qwen/Qwen3-VL-32B-Instruct-FP8",
    },
    "train": {"learning_rate": 5e-6},  # method.md 2: 4e-6 CPT, 5e-6 SFT, 5e-7 LongPO
    "merge": {"alphas": [0.25]},  # method.md 2: merge strength 0.25 (0.5 for Mistral CPT)
    "eval": {"inference.page_index": "Page {i}:",  # method.md 2: in training and evaluation
             "inference.modes": ["plain", "cot"]},  # method.md 3
}


def test_paper1_equals_the_paper() -> None:
    assert {f.stem for f in preset_files("paper1")} == set(PAPER1)
    for section, expected in PAPER1.items():
        recipe = resolved("paper1", BY_SECTION[section])
        assert {key: value(recipe, key) for key in expected} == expected, section


# -- every file ----------------------------------------------------------------------------------

_SETTING = re.compile(r"^\s*[\w-]+:\s*\S")  # a key with a value on the same line


@pytest.mark.parametrize("name", sorted(preset_names()))
def test_every_value_names_its_source(name: str) -> None:
    for path in preset_files(name):
        for line in path.read_text().splitlines():
            if _SETTING.match(line) and not line.lstrip().startswith("#"):
                assert "#" in line, f"{path.name}: {line!r} says no source"
        recipe = resolved(name, BY_SECTION[path.stem])  # and it validates
        assert isinstance(recipe, BY_SECTION[path.stem])


def test_preset_under_recipe_file_under_flags(tmp_path: Path) -> None:
    file = tmp_path / "r.yaml"
    file.write_text("trace: {top_k: 12}\nanswer: {max_tokens: 2048}\n")
    base = PLACEHOLDERS[SynthRecipe]
    recipe = load_recipe(SynthRecipe, file, {"seed": 3}, defaults=base, preset="paper2-code")
    assert (recipe.trace.top_k, recipe.answer.max_tokens, recipe.seed) == (12, 2048, 3)
    assert recipe.answer.temperature == 0.7 and recipe.trace.threshold == 1.0  # the preset's
    # nested settings merge key by key: the file's endpoint keeps the preset's model name
    file.write_text("models: {evidence: {endpoints: [{base_url: 'http://gpu-7:8000/v1'}]}}\n")
    recipe = load_recipe(SynthRecipe, file, {}, defaults=base, preset="paper2-code")
    assert recipe.models.evidence.model == "Qwen/Qwen3-VL-32B-Instruct-FP8"
    assert recipe.models.evidence.endpoints[0].base_url == "http://gpu-7:8000/v1"


def test_unknown_presets_and_uncovered_commands_are_refused() -> None:
    with pytest.raises(RecipeError, match=r"no preset 'paper3' \(have: paper1, paper2, "):
        load_recipe(SynthRecipe, None, {}, defaults=PLACEHOLDERS[SynthRecipe], preset="paper3")
    with pytest.raises(RecipeError, match=r"preset 'paper2-code' has no settings for train "
                                          r"\(it covers: synth\)"):
        load_recipe(TrainRecipe, None, {}, defaults=PLACEHOLDERS[TrainRecipe],
                    preset="paper2-code")


def test_print_recipe_shows_a_preset_resolved_with_the_flags() -> None:
    result = CliRunner().invoke(app, ["synth", "--preset", "paper2", "--print-recipe",
                                      "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert "top_k: 16" in result.output and "seed: 9" in result.output
    assert "model: Qwen/Qwen3-VL-32B-Instruct-FP8" in result.output
    for command in (["questions"], ["train"], ["merge"], ["eval", "run"]):
        result = CliRunner().invoke(app, [*command, "--preset", "paper1", "--print-recipe"])
        assert result.exit_code == 0, (command, result.output)
    merge = CliRunner().invoke(app, ["merge", "--preset", "paper1", "--print-recipe"]).output
    assert "alphas:\n- 0.25" in merge
    shown = CliRunner().invoke(app, ["presets", "show", "paper2"]).output
    assert "docthink synth --preset paper2" in shown and "DISAGREE" in shown
    listed = CliRunner().invoke(app, ["presets", "list"]).output
    assert "paper2-code  (synth)" in listed
    refused = CliRunner().invoke(app, ["train", "--preset", "paper2-code", "--print-recipe"])
    assert refused.exit_code == 2 and "has no settings for train" in refused.output
