"""A local Hugging Face checkpoint as a `ChatModel`: transformers' `AutoModelForImageTextToText`
and `AutoProcessor`, in this process, so a trained or merged model is evaluated without a server.

Requests become the checkpoint's chat template (a text-only message as a plain string, otherwise a
list of text and image parts; images are read from `ImagePart.path`), then batched generation:
requests that arrive while the model is busy, or in the same event-loop turn, are grouped into
batches of at most `batch_size` with the same generation settings, left-padded, and generated one
batch at a time in a worker thread (`asyncio.to_thread`), so the event loop stays free.

Decoding: greedy at temperature 0, else sampling at the request's temperature, seeded with its
seed when it has one (a seeded request is generated alone, so batch-mates cannot change its
draws). The request decides sampling: the checkpoint's generation config contributes only its end
of sequence and pad tokens, never its top_p, top_k or repetition penalty. `max_tokens` is
`max_new_tokens`.

Output: the tokens generated before the first end-of-sequence token, decoded with special tokens
kept, so `<think>`/`</think>` survive whether or not the tokenizer marks them special; the
end-of-sequence token itself is counted but not returned (as OpenAI-compatible servers do).
completion_tokens = generated tokens up to and including it (all of them when the budget ran out);
prompt_tokens = the prompt's tokens, image placeholders included, padding excluded.

Structured output (`response_model`): the model generates freely and its text is validated with
pydantic; text that does not validate fails the request with "invalid output: ...". There is no
constrained decoding and no re-ask.

Failures: an unreadable image fails its request ("image: ..."); a batch whose generation raises is
retried one request at a time, so only the request that caused it fails ("generate: ...").

The model's name, which goes into cache keys and reports, is the spec's name (default: the
folder's name), a hash of the checkpoint's files (weights, configs, tokenizer, template) and the
dtype: retraining into the same folder does not reuse old cached answers. Hashing reads every
file once, when the model is built.

torch, transformers and torchvision (Qwen-VL processors need it) come with the `local` extra and are
imported only when a `LocalModel` is built.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from docthink.core.errors import UserError, needs_extra
from docthink.core.parts import ImagePart, TextPart
from docthink.models.base import ChatRequest, ChatResult, Message, RequestFailed, Usage, UsageMeter

if TYPE_CHECKING:
    from PIL import Image

EXTRA = "local"


class LocalModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local"] = "local"
    path: Path = Field(description="checkpoint folder: config, safetensors, processor files")
    name: str | None = Field(
        None,
        description="name in reports and cache keys (a hash of the checkpoint's files and "
        "the dtype are appended); null: the folder's name",
    )
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="auto: cuda if available")
    dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "auto", description="auto: bfloat16 on cuda, float32 on cpu"
    )
    batch_size: int = Field(8, ge=1, description="requests generated together")


def _require_extra() -> None:
    with needs_extra(EXTRA, "a local model"):
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        import transformers  # noqa: F401


def checkpoint_digest(path: Path) -> str:
    """sha256 over the checkpoint folder's files (names and contents, in name order): weights,
    configs, tokenizer and chat template all decide the answers."""
    if not path.is_dir():
        raise UserError(f"{path}: no such folder (a local model is a checkpoint folder)")
    files = sorted(f for f in path.iterdir() if f.is_file())
    if not any(f.suffix == ".safetensors" for f in files):
        raise UserError(f"{path}: no *.safetensors file: not a checkpoint folder")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class _Job:
    conversation: list[dict[str, Any]]
    images: tuple[ImagePart, ...]
    max_tokens: int
    temperature: float
    seed: int | None

    def batch_key(self) -> tuple[object, ...]:
        """Jobs with equal keys may share a generate call."""
        if self.temperature == 0:
            return (self.max_tokens, 0.0)
        if self.seed is None:
            return (self.max_tokens, self.temperature)
        return (id(self),)  # seeded sampling: alone, so its draws depend on the request only


@dataclass(frozen=True, slots=True)
class _Output:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class _Pending:
    job: _Job
    future: asyncio.Future[_Output]


Outcome = _Output | RequestFailed


@dataclass
class Batcher:
    """Runs `run` over batches of at most `size` jobs with equal `batch_key()`, one batch at a
    time in a worker thread, in arrival order (a batch takes the oldest job and the next jobs
    that may join it)."""

    run: Callable[[list[_Job]], list[Outcome]]
    size: int
    batches: list[int] = field(default_factory=list)  # size of each batch run, for tests and logs
    _queue: list[_Pending] = field(default_factory=list)
    _worker: asyncio.Task[None] | None = None

    async def submit(self, job: _Job) -> _Output:
        future: asyncio.Future[_Output] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(job, future))
        if self._worker is None or self._worker.done():
            # Started as a task: requests submitted in this event-loop turn join the first batch.
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def wait(self) -> None:
        if self._worker is not None:
            await self._worker

    def _next_batch(self) -> list[_Pending]:
        key = self._queue[0].job.batch_key()
        batch = [p for p in self._queue if p.job.batch_key() == key][: self.size]
        taken = {id(p) for p in batch}
        self._queue = [p for p in self._queue if id(p) not in taken]
        return batch

    async def _drain(self) -> None:
        while self._queue:
            batch = self._next_batch()
            self.batches.append(len(batch))
            outcomes: Sequence[Outcome | Exception]
            try:
                outcomes = await asyncio.to_thread(self.run, [p.job for p in batch])
            except Exception as error:  # noqa: BLE001  # a bug: re-raised in each caller, not lost
                outcomes = [error] * len(batch)
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.cancelled():
                    continue
                if isinstance(outcome, Exception):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)


class LocalModel:
    """A `ChatModel` over a local checkpoint; loads it (and checks the extra) when built."""

    def __init__(self, spec: LocalModelSpec) -> None:
        _require_extra()
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

        self.spec = spec
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu")
            if spec.device == "auto"
            else spec.device
        )
        dtype = spec.dtype
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = dtype
        digest = checkpoint_digest(spec.path)
        self.name = f"{spec.name or spec.path.resolve().name}@{digest[:12]}:{dtype}"
        self.usage = UsageMeter()
        self.processor = AutoProcessor.from_pretrained(spec.path)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.model = (
            AutoModelForImageTextToText.from_pretrained(spec.path, dtype=getattr(torch, dtype))
            .to(self.device)
            .eval()
        )
        saved = self.model.generation_config
        self.eos_ids = _token_ids(saved.eos_token_id)
        if not self.eos_ids:
            raise ValueError(f"{spec.path}: generation_config.json names no eos_token_id")
        pad = next(
            p
            for p in (saved.pad_token_id, self.tokenizer.pad_token_id, min(self.eos_ids))
            if p is not None
        )
        # generate() fills every setting a call leaves unset from model.generation_config: keep
        # only the checkpoint's eos and pad there, so the request alone decides the sampling.
        self.model.generation_config = GenerationConfig(
            eos_token_id=sorted(self.eos_ids), pad_token_id=pad
        )
        self.batcher = Batcher(self._run, spec.batch_size)

    def __repr__(self) -> str:
        return f"LocalModel({self.name!r}, path={str(self.spec.path)!r}, device={self.device})"

    async def complete(self, request: ChatRequest) -> ChatResult:
        started = time.perf_counter()
        try:
            output = await self.batcher.submit(_job(request))
            parsed = _parsed(request, output.text)
        except RequestFailed as failure:
            self.usage.record_failure(failure)
            raise
        usage = Usage(output.prompt_tokens, output.completion_tokens)
        result = ChatResult(output.text, parsed, usage, self.name, time.perf_counter() - started)
        self.usage.record(result)
        return result

    async def aclose(self) -> None:
        await self.batcher.wait()

    def prompt(self, request: ChatRequest) -> str:
        """The chat template's rendering of a request, ending with the assistant's turn opening."""
        return self._render(_job(request).conversation)

    def _render(self, conversation: list[dict[str, Any]]) -> str:
        return self.processor.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )

    # -- in the worker thread -------------------------------------------------------------------

    def _run(self, jobs: list[_Job]) -> list[Outcome]:
        loaded: list[tuple[_Job, list[Image.Image]]] = []
        outcomes: dict[int, Outcome] = {}
        for i, job in enumerate(jobs):
            try:
                loaded.append((job, [_open(part) for part in job.images]))
            except OSError as error:
                outcomes[i] = RequestFailed(f"image: {error}", 1)
        ready = [i for i in range(len(jobs)) if i not in outcomes]
        for i, outcome in zip(ready, self._generate_or_split(loaded), strict=True):
            outcomes[i] = outcome
        return [outcomes[i] for i in range(len(jobs))]

    def _generate_or_split(self, loaded: list[tuple[_Job, list[Image.Image]]]) -> list[Outcome]:
        if not loaded:
            return []
        try:
            return self._generate(loaded)
        except (RuntimeError, ValueError) as error:  # torch and processor errors, OOM included
            if len(loaded) == 1:
                return [RequestFailed(f"generate: {str(error).splitlines()[0]}", 1)]
        return [o for one in loaded for o in self._generate_or_split([one])]

    def _generate(self, loaded: Sequence[tuple[_Job, list[Image.Image]]]) -> list[Outcome]:
        import torch

        job = loaded[0][0]  # every job of a batch has the same settings (batch_key)
        images = [image for _, job_images in loaded for image in job_images]
        inputs = self.processor(
            text=[self._render(j.conversation) for j, _ in loaded], images=images or None,
            padding=True, return_tensors="pt",
        ).to(self.device)  # fmt: skip
        sampled = {"do_sample": True, "temperature": job.temperature} if job.temperature else {}
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # a seed must not reseed the caller's draws
            if job.seed is not None:
                torch.manual_seed(job.seed)
            with torch.inference_mode():
                generated = self.model.generate(**inputs, max_new_tokens=job.max_tokens, **sampled)
        new = generated[:, inputs["input_ids"].shape[1] :].tolist()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        return [self._output(ids, n) for ids, n in zip(new, prompt_tokens, strict=True)]

    def _output(self, ids: list[int], prompt_tokens: int) -> _Output:
        end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        kept = ids if end is None else ids[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=False)
        return _Output(text, prompt_tokens, len(ids) if end is None else end + 1)


def _token_ids(value: int | list[int] | None) -> frozenset[int]:
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, int) else value)


def _open(part: ImagePart) -> Image.Image:
    from PIL import Image

    with Image.open(part.path) as image:
        return image.convert("RGB")


def _message(message: Message) -> dict[str, Any]:
    content = message.content
    if len(content) == 1 and isinstance(content[0], TextPart):
        return {"role": message.role, "content": content[0].text}
    parts = [
        {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
        for p in content
    ]
    return {"role": message.role, "content": parts}


def _job(request: ChatRequest) -> _Job:
    images = tuple(p for m in request.messages for p in m.content if isinstance(p, ImagePart))
    return _Job(
        conversation=[_message(m) for m in request.messages],
        images=images,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        seed=request.seed,
    )


def _parsed(request: ChatRequest, text: str) -> BaseModel | None:
    if request.response_model is None:
        return None
    try:
        return request.response_model.model_validate_json(text)
    except ValidationError as error:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'output'}: {e['msg']}" for e in error.errors()[:3]
        ]
        raise RequestFailed(f"invalid output: {'; '.join(problems)}", 1) from None
