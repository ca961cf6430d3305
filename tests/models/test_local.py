"""`LocalModel`: a real tiny Qwen2.5-VL checkpoint from the factory, run by transformers on CPU.

Batching must not change what a request gets; token counts, images, the `<cot>` system message
and failures must reach the result as documented in `docthink.models.local`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import TypeAdapter

from docthink.core.parts import ImagePart, TextPart
from docthink.models.base import ChatRequest, ChatResult, Message, RequestFailed
from docthink.models.build import build_model
from docthink.models.local import LocalModel, LocalModelSpec
from docthink.models.specs import ModelSpec
from docthink.models.tasks import ShortAnswer
from docthink.testing import build_tiny_vlm


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("local") / "tiny", seed=1)


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> LocalModel:
    return LocalModel(LocalModelSpec(path=checkpoint, device="cpu", dtype="float32", batch_size=4))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> list[ImagePart]:
    """Four noise pages of different sizes, stored as an image store would."""
    folder = tmp_path_factory.mktemp("pages")
    rng = np.random.default_rng(0)
    parts = []
    for i, (width, height) in enumerate([(612, 792), (612, 792), (792, 612), (500, 700)]):
        path = folder / f"page{i}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        parts.append(ImagePart(path, hashlib.sha256(path.read_bytes()).hexdigest(), "image/png"))
    return parts


def request(
    images: list[ImagePart],
    question: str,
    *,
    cot: bool = False,
    max_tokens: int = 12,
    **options: object,
) -> ChatRequest:
    system = (Message.text("system", "<cot>"),) if cot else ()
    user = Message("user", (*images, TextPart(question)))
    return ChatRequest(messages=(*system, user), max_tokens=max_tokens, **options)  # type: ignore[arg-type]


def complete_together(model: LocalModel, requests: list[ChatRequest]) -> list[ChatResult]:
    async def run() -> list[ChatResult]:
        return await asyncio.gather(*(model.complete(r) for r in requests))

    return asyncio.run(run())


def complete_one_by_one(model: LocalModel, requests: list[ChatRequest]) -> list[ChatResult]:
    async def run() -> list[ChatResult]:
        return [await model.complete(r) for r in requests]

    return asyncio.run(run())


def varied(pages: list[ImagePart]) -> list[ChatRequest]:
    """Prompts of different lengths (so batches are padded), with and without pages and <cot>."""
    return [
        request(pages[:2], "How many?"),
        request(pages[1:4], "What was the revenue in 2023?", cot=True),
        request([], "Hi"),
        request(pages[3:], "Who signed the report on the last page of the document?"),
    ]


def new_tokens(model: LocalModel, req: ChatRequest, max_new_tokens: int) -> tuple[list[int], int]:
    """Oracle: transformers' own greedy generate on the same prompt; (new ids, prompt length)."""
    images = [
        Image.open(p.path).convert("RGB")
        for m in req.messages
        for p in m.content
        if isinstance(p, ImagePart)
    ]
    inputs = model.processor(text=[model.prompt(req)], images=images or None, return_tensors="pt")
    with torch.inference_mode():
        out = model.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist(), inputs["input_ids"].shape[1]


# -- batching -------------------------------------------------------------------------------------


def test_batched_generation_equals_one_request_at_a_time(
    model: LocalModel, pages: list[ImagePart]
) -> None:
    assert_batching_changes_nothing(model, varied(pages))


def test_batched_generation_equals_one_request_at_a_time_qwen3(
    pages: list[ImagePart], tmp_path: Path
) -> None:
    checkpoint = build_tiny_vlm(tmp_path / "tiny3", "qwen3-vl")
    model = LocalModel(LocalModelSpec(path=checkpoint, device="cpu", batch_size=4))
    assert_batching_changes_nothing(model, varied(pages))


def assert_batching_changes_nothing(model: LocalModel, requests: list[ChatRequest]) -> None:
    before = len(model.batcher.batches)
    together = complete_together(model, requests)
    assert model.batcher.batches[before:] == [4]
    alone = complete_one_by_one(model, requests)
    assert model.batcher.batches[before + 1 :] == [1, 1, 1, 1]
    assert [(r.text, r.usage) for r in together] == [(r.text, r.usage) for r in alone]
    assert len({r.text for r in together}) == 4  # the prompts lead to different outputs


def test_concurrent_requests_form_batches_and_the_event_loop_stays_free(
    model: LocalModel, pages: list[ImagePart]
) -> None:
    requests = [request(pages[i % 4 : i % 4 + 1], f"Question {i}?") for i in range(6)]
    longer = request(pages[:1], "Question 0?", max_tokens=20)  # other settings: its own batch
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    async def run() -> list[ChatResult]:
        ticker = asyncio.create_task(tick())
        results = await asyncio.gather(*(model.complete(r) for r in [*requests, longer]))
        ticker.cancel()
        return results

    before = len(model.batcher.batches)
    results = asyncio.run(run())
    # oldest first: the first 4 together, then the other 2, then the one with more tokens
    assert model.batcher.batches[before:] == [4, 2, 1]
    assert ticks > 0  # generation ran in a worker thread, not on the loop
    assert results[6].text.startswith(results[0].text)  # greedy: 12 tokens are a prefix of 20
    assert results[6].usage.completion_tokens == 20


def test_seeded_sampling_repeats_and_runs_alone(model: LocalModel, pages: list[ImagePart]) -> None:
    sampled = [
        request(pages[:1], "Describe the page.", max_tokens=16, temperature=1.0, seed=s)
        for s in (7, 7, 8)
    ]
    before = len(model.batcher.batches)
    first, again, other = complete_together(model, sampled)
    assert model.batcher.batches[before:] == [1, 1, 1]
    assert first.text == again.text
    assert other.text != first.text
    greedy = complete_one_by_one(model, [request(pages[:1], "Describe the page.", max_tokens=16)])
    assert greedy[0].text not in (first.text, other.text)


# -- what a result holds ----------------------------------------------------------------------------


def test_token_counts_and_text_follow_the_generated_tokens(
    model: LocalModel, pages: list[ImagePart]
) -> None:
    for req in varied(pages):
        ids, prompt_length = new_tokens(model, req, 12)
        (result,) = complete_one_by_one(model, [req])
        assert result.usage.prompt_tokens == prompt_length  # images included, padding not
        eos = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert eos not in ids  # the random model does not stop here: the budget ends it
        assert result.usage.completion_tokens == len(ids) == 12
        assert result.text == model.tokenizer.decode(ids, skip_special_tokens=False)


def test_generation_stops_at_eos_which_is_counted_but_not_returned(
    model: LocalModel, checkpoint: Path, pages: list[ImagePart], tmp_path: Path
) -> None:
    req = request(pages[:2], "How many?")
    ids, _ = new_tokens(model, req, 12)
    stop = next(i for i in range(3, 12) if ids[i] not in ids[:i])  # first time this token appears
    copy = Path(shutil.copytree(checkpoint, tmp_path / "stops"))
    config = json.loads((copy / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], ids[stop]]  # as Qwen's list of two
    (copy / "generation_config.json").write_text(json.dumps(config))

    stopping = LocalModel(LocalModelSpec(path=copy, device="cpu", dtype="float32"))
    (result,) = complete_one_by_one(stopping, [req])
    assert result.usage.completion_tokens == stop + 1
    assert result.text == model.tokenizer.decode(ids[:stop], skip_special_tokens=False)
    # other answers from the same weights: another name, so no cached answer is reused
    assert stopping.name.split("@")[1] != model.name.split("@")[1]


def test_think_tags_come_back_in_the_text(model: LocalModel) -> None:
    think, end = (model.tokenizer.convert_tokens_to_ids(t) for t in ("<think>", "</think>"))
    ids = [think, *model.tokenizer.encode(" 12 "), end, *model.tokenizer.encode("12")]
    assert model._output(ids, 1).text == "<think> 12 </think>12"


def test_page_images_reach_the_model(model: LocalModel, pages: list[ImagePart]) -> None:
    one, other, two = complete_one_by_one(model, [
        request(pages[:1], "How many?"), request(pages[1:2], "How many?"),
        request(pages[:2], "How many?"),
    ])  # fmt: skip
    assert one.usage.prompt_tokens == other.usage.prompt_tokens  # same size, different pixels
    assert one.text != other.text
    grid = model.processor.image_processor(images=[Image.open(pages[1].path)])["image_grid_thw"]
    page_tokens = int(grid.prod()) // 4 + 2  # merged patches, between <|vision_start|> and _end|>
    assert two.usage.prompt_tokens == one.usage.prompt_tokens + page_tokens


def test_cot_system_message_reaches_the_template(model: LocalModel, pages: list[ImagePart]) -> None:
    plain, cot = request(pages[:1], "How many?"), request(pages[:1], "How many?", cot=True)
    assert model.prompt(cot) == "<|im_start|>system\n<cot><|im_end|>\n" + model.prompt(plain)
    results = complete_one_by_one(model, [plain, cot])
    system = len(model.tokenizer.encode("<|im_start|>system\n<cot><|im_end|>\n"))
    assert results[1].usage.prompt_tokens == results[0].usage.prompt_tokens + system
    assert results[0].text != results[1].text


# -- failures -------------------------------------------------------------------------------------


def test_structured_output_that_does_not_validate_fails_the_request(
    checkpoint: Path, pages: list[ImagePart]
) -> None:
    model = LocalModel(LocalModelSpec(path=checkpoint, device="cpu", dtype="float32"))
    structured = request(pages[:1], "How many?", response_model=ShortAnswer)
    with pytest.raises(RequestFailed, match=r"^invalid output: output: Invalid JSON"):
        complete_one_by_one(model, [structured])
    assert model.usage.failures == 1
    assert model.usage.failure_reasons == {"invalid output": 1}


def test_an_unreadable_image_fails_only_its_request(
    checkpoint: Path, pages: list[ImagePart], tmp_path: Path
) -> None:
    model = LocalModel(LocalModelSpec(path=checkpoint, device="cpu", dtype="float32"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = ImagePart(broken, hashlib.sha256(b"not a png").hexdigest(), "image/png")

    async def run() -> list[ChatResult | BaseException]:
        return await asyncio.gather(
            model.complete(request(pages[:1], "How many?")),
            model.complete(request([bad], "How many?")),
            return_exceptions=True,
        )

    good, failed = asyncio.run(run())
    assert isinstance(good, ChatResult)
    assert isinstance(failed, RequestFailed) and failed.reason.startswith("image: ")
    assert model.batcher.batches == [2]
    assert model.usage.as_dict()["failure_reasons"] == {"image": 1}
    assert model.usage.requests == 2


# -- building -------------------------------------------------------------------------------------


def test_recipe_spec_builds_a_local_model_named_by_its_files(
    checkpoint: Path, tmp_path: Path
) -> None:
    spec = TypeAdapter(ModelSpec).validate_python({"kind": "local", "path": str(checkpoint)})
    assert isinstance(spec, LocalModelSpec) and (spec.device, spec.dtype) == ("auto", "auto")
    built = build_model(spec, pages=None)  # type: ignore[arg-type]  # only the teacher reads pages
    assert isinstance(built, LocalModel)
    assert built.name.startswith("tiny@") and built.name.endswith(":float32")  # no GPU here
    retrained = LocalModel(LocalModelSpec(path=build_tiny_vlm(tmp_path / "tiny", seed=2)))
    assert retrained.name.split("@")[0] == "tiny" and retrained.name != built.name


def test_missing_extra_is_named(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    needs = "needs transformers, which is not installed: pip install 'docthink[local]'"
    with pytest.raises(ModuleNotFoundError, match=re.escape(needs)):
        LocalModel(LocalModelSpec(path=checkpoint))
