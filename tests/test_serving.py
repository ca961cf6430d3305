"""What a recipe asks of its servers (`docthink.serving`), without vLLM: the image-token rule is
Qwen-VL's (checked against transformers' and the tiny model's processor), a recipe over a stated
or read limit is refused in one line before any request reaches the server, and `serve-args`
prints the command line that would take the recipe. tests/vllm runs the same against vLLM."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from transformers import AutoProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
from typer.testing import CliRunner

from docthink.cli import app
from docthink.corpus.corpus import Corpus
from docthink.corpus.policy import RenderPolicy
from docthink.evals.recipe import EvalRecipe
from docthink.models.limits import image_tokens, page_pixels, served_limits
from docthink.models.specs import ImageTokens, OpenAIModelSpec
from docthink.runs import Registry
from docthink.serving import LimitsError, check, eval_demands
from docthink.testing import build_tiny_vlm
from tests.helpers import docthink

sys.path.insert(0, str(Path(__file__).parent / "models"))
from openai_server import OpenAIServer, Reply

QWEN25 = ImageTokens()
QWEN3 = ImageTokens(token_pixels=32, min_pixels=65536, max_pixels=16777216)
TINY = ImageTokens(min_pixels=4 * 784, max_pixels=16 * 784)


@pytest.mark.parametrize("rule", [QWEN25, QWEN3, TINY])
@pytest.mark.parametrize("size", [(990, 1280), (1224, 1584), (1280, 720), (13, 400),
                                  (5000, 7000), (64, 64)])
def test_image_tokens_follow_qwen_vl_smart_resize(rule: ImageTokens, size: tuple[int, int]) -> None:
    width, height = size
    h, w = smart_resize(height, width, rule.token_pixels, rule.min_pixels, rule.max_pixels)
    assert image_tokens(width, height, rule) == (h // rule.token_pixels) * (w // rule.token_pixels) + 2


def test_image_tokens_are_what_the_tiny_models_processor_makes(tmp_path: Path) -> None:
    processor = AutoProcessor.from_pretrained(build_tiny_vlm(tmp_path / "tiny"))
    for width, height in [(990, 1280), (1280, 720), (200, 300)]:
        grid = processor.image_processor(images=[Image.new("RGB", (width, height))],
                                         return_tensors="pt")["image_grid_thw"]
        assert image_tokens(width, height, TINY) == int(grid.prod()) // 4 + 2


def test_page_pixels_are_the_rendered_size(sample_corpus: tuple[Path, Path]) -> None:
    corpus, _ = sample_corpus
    with Corpus.open(corpus) as c:
        document = next(iter(c.documents.values()))
        for policy in (RenderPolicy(), RenderPolicy(dpi=72, max_side=4096)):
            [image] = c.ensure_images(document.pages()[:1], policy)
            with Image.open(image.path) as rendered:
                assert page_pixels(document.page_sizes[0], policy) == rendered.size


def spec(url: str, model: str = "vl", **limits: Any) -> dict[str, Any]:
    return {"kind": "openai", "model": model, "endpoints": [{"base_url": url, "api_key_env": None}],
            "timeout_s": 5, "max_retries": 0, "limits": limits}


def synth_recipe(tmp_path: Path, sample: tuple[Path, Path], models: dict[str, Any],
                 **settings: Any) -> Path:
    corpus, questions = sample
    recipe = {"corpus": str(corpus), "questions": str(questions), "out": str(tmp_path / "out"),
              "models": models, **settings}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe), encoding="utf-8")
    return path


def refused(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    [line] = result.output.strip().splitlines()
    return line


def no_runs() -> bool:
    with Registry(Path(os.environ["DOCTHINK_REGISTRY"])) as registry:
        return registry.list() == []


def test_too_many_images_for_the_server_stop_synth_before_the_first_request(
    sample_corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    with OpenAIServer() as server:
        server.models = [{"id": "vl", "max_model_len": 1_000_000}]
        model = spec(server.url, images_per_prompt=8)
        recipe = synth_recipe(tmp_path, sample_corpus, {"evidence": model, "answer_vision": model})
        line = refused("synth", "--recipe", recipe, "--runs-dir", tmp_path / "runs")
        assert line == (
            "error: trace.top_k gives models.answer_vision 16 images in one request (an answer "
            "from 16 page images), but its server takes at most 8 "
            "(models.answer_vision.limits.images_per_prompt): lower trace.top_k to send at most "
            """8, or serve the model with --limit-mm-per-prompt '{"image": 16}'""")
        assert server.received == [] and no_runs() and not (tmp_path / "out").exists()
        # within the limit: the run goes ahead
        server.responder = lambda body: Reply(json.dumps({"evidence": "x", "relevance_score": 5})
                                              if "response_format" in body else "an answer")
        recipe = synth_recipe(tmp_path, sample_corpus, {"evidence": model, "answer_vision": model},
                              trace={"top_k": 8})
        docthink("synth", "--recipe", recipe, "--runs-dir", tmp_path / "runs")
        assert len(server.received) > 100


def test_the_context_length_is_read_from_the_server_unless_stated(
    sample_corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    with OpenAIServer() as server:
        server.models = [{"id": "other", "max_model_len": 100}, {"id": "vl", "max_model_len": 2048}]
        recipe = synth_recipe(tmp_path, sample_corpus, {"evidence": spec(server.url)})
        line = refused("synth", "--recipe", recipe, "--runs-dir", tmp_path / "runs")
        assert line.startswith("error: models.evidence's longest request (evidence from one page) "
                               "takes up to ")
        assert (f"but its server takes 2,048 (max_model_len read from {server.url}/models): lower "
                "evidence.max_tokens or image.max_side, or serve the model with --max-model-len "
                ) in line
        assert server.received == [] and no_runs()
        # a stated length is believed, the server is not asked
        stated = spec(server.url, max_model_len=1_000_000)
        assert served_limits(OpenAIModelSpec.model_validate(stated)).max_model_len == 1_000_000
        # a server that lists no length (OpenAI's, a 404, another model): not checked
        for models in ([{"id": "vl"}], None, [{"id": "other", "max_model_len": 100}]):
            server.models = models
            limits = served_limits(OpenAIModelSpec.model_validate(spec(server.url)))
            assert limits.max_model_len is None
        assert limits.source == f"{server.url}/models: 'vl' not listed"


def test_the_eval_page_cap_is_checked_against_the_server(
    sample_corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, questions = sample_corpus
    rows = [{"doc_id": q["doc_id"], "doc_type": "Report", "question": q["question"],
             "answer": q["answer"], "evidence_pages": str(q["source_pages"]),
             "evidence_sources": "[]", "answer_format": "Str"} for q in map(json.loads,
                                                                         questions.open())]
    data = tmp_path / "samples.json"
    data.write_text(json.dumps(rows))
    base = {"data": data, "corpus": corpus, "out": tmp_path / "eval",
            "model": spec("http://127.0.0.1:9/v1", images_per_prompt=8, max_model_len=200_000)}
    recipe = EvalRecipe.model_validate(base)
    with Corpus.open(corpus) as c:
        longest = max(d.n_pages for d in c.documents.values())
    with pytest.raises(LimitsError, match=rf"^inference.max_pages gives model {longest} images"):
        check(eval_demands(recipe))
    capped = EvalRecipe.model_validate(base | {"inference": {"max_pages": 8}})
    check(eval_demands(capped))
    [demand] = eval_demands(capped)
    # the official protocol's pages (144 dpi, no cap) of a US Letter page: 1224x1584 px
    assert demand.images == 8 and demand.tokens >= 8 * image_tokens(1224, 1584, QWEN25) + 1024


def flags(words: list[str]) -> dict[str, str | None]:
    """--flag value pairs, None for a flag without a value."""
    return {w: None if i + 1 == len(words) or words[i + 1].startswith("--") else words[i + 1]
            for i, w in enumerate(words) if w.startswith("--")}


def test_serve_args_prints_one_vllm_command_per_server(
    sample_corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    vl, llm = spec("http://gpu-1:8001/v1"), spec("http://gpu-2:8002/v1", model="text-llm")
    recipe = synth_recipe(tmp_path, sample_corpus,
                          {"evidence": vl, "answer_vision": vl, "answer_text": llm})
    lines = docthink("serve-args", "synth", recipe).splitlines()
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    assert [c[:5] for c in commands] == [["vllm", "serve", "vl", "--port", "8001"],
                                         ["vllm", "serve", "text-llm", "--port", "8002"]]
    first, second = map(flags, commands)
    assert json.loads(str(first["--limit-mm-per-prompt"])) == {"image": 16}  # trace.top_k
    assert json.loads(str(first["--structured-outputs-config"]))["backend"] == "xgrammar"
    assert first["--enable-prefix-caching"] is None is second["--enable-prefix-caching"]
    # the longest request on the VL server: 16 pages of the sample corpus at 144 dpi capped at
    # 1280 px, 1,024 output tokens
    with Corpus.open(sample_corpus[0]) as c:
        page = max(image_tokens(*page_pixels(size, RenderPolicy()), QWEN25)
                   for d in c.documents.values() for size in d.page_sizes)
    length = int(str(first["--max-model-len"]))
    assert 16 * page + 1024 <= length <= 16 * page + 1024 + 1024 and length % 256 == 0
    # the text model: no images, no JSON; its trace is 16 pages of up to 1,024 tokens of evidence
    assert "--limit-mm-per-prompt" not in second and "--structured-outputs-config" not in second
    assert 16 * 1024 + 1024 <= int(str(second["--max-model-len"])) <= 16 * 1024 + 1024 + 2048
    # the offline teacher needs no server
    teacher = synth_recipe(tmp_path, sample_corpus, {})
    assert "no model of this recipe is served" in docthink("serve-args", "synth", teacher)
