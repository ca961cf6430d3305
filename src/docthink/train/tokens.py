"""The control token and the trace delimiters as real tokens, and the chat-template checks
training relies on.

`<cot>`, `<think>` and `</think>` are added as normal (not special) tokens when the tokenizer
does not already turn each into one id: decoding with `skip_special_tokens=True` must keep a
trace's `<think>`, as Qwen3 ships it. New embedding rows start at the mean of the old ones."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from docthink.core.errors import UserError
from docthink.core.vocab import CONTROL_TOKENS, COT

_PROBE = "\x00probe\x00"


class TemplateError(UserError, ValueError):
    """A tokenizer or chat template that would not train the `<cot>` switch as exported."""


@dataclass(frozen=True)
class TokenSetup:
    added: tuple[str, ...]  # tokens this setup added (empty when the tokenizer had them all)
    ids: dict[str, int]
    rows_before: int  # embedding rows of the starting checkpoint
    rows_after: int


def _single_id(tokenizer: Any, token: str) -> int | None:
    ids = tokenizer.encode(token, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def add_control_tokens(model: Any, processor: Any) -> TokenSetup:
    """Add the control tokens the tokenizer lacks and grow the embeddings to match."""
    from tokenizers import AddedToken

    tokenizer = processor.tokenizer
    missing = [t for t in CONTROL_TOKENS if _single_id(tokenizer, t) is None]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    ids = {t: i for t in CONTROL_TOKENS if (i := _single_id(tokenizer, t)) is not None}
    split = [t for t in CONTROL_TOKENS if t not in ids]
    if split:
        raise TemplateError(f"the tokenizer still splits {split} after adding them")
    rows_before = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows_before:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    rows_after = model.get_input_embeddings().weight.shape[0]
    return TokenSetup(tuple(missing), ids, rows_before, rows_after)


def _render(processor: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return processor.apply_chat_template(messages, tokenize=False, **kwargs)


def _msg(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def _neighbours(tokenizer: Any, text: str, at: int) -> tuple[str, str]:
    """The text between the `<cot>` at `at` and the nearest special tokens on either side: for a
    system message that is only `<cot>`, a role marker before it and whitespace after it."""
    special = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    start = max((text.rfind(t, 0, at) + len(t) for t in special if text.rfind(t, 0, at) >= 0),
                default=0)
    end_at = at + len(COT)
    ends = [text.find(t, end_at) for t in special if text.find(t, end_at) >= 0]
    return text[start:at], text[end_at:min(ends, default=len(text))]


def check_cot_system(processor: Any, template: str | None = None) -> str:
    """Raise unless the chat template keeps a system message that is only `<cot>`: rendered as
    one `<cot>` token, treated like any other system text (not special-cased), not dropped, with
    no text of the template's beside it (a default prompt, the user's turn), and absent when there
    is no system message. Returns the rendering."""
    kwargs = {"chat_template": template} if template is not None else {}
    user = _msg("user", "What is the total?")
    with_cot = _render(processor, [_msg("system", COT), user], **kwargs)
    with_probe = _render(processor, [_msg("system", _PROBE), user], **kwargs)
    without = _render(processor, [user], **kwargs)
    if with_cot == without:
        raise TemplateError(f"the chat template drops the system message: {with_cot!r}")
    if (with_cot.count(COT) != 1 or COT in without
            or with_probe.replace(_PROBE, COT) != with_cot):
        raise TemplateError(
            f"the chat template does not keep a system message that is only {COT}: {with_cot!r}"
        )
    before, after = _neighbours(processor.tokenizer, with_cot, with_cot.index(COT))
    if re.search(r"\w", before.replace("system", "")) or after.strip():
        raise TemplateError(f"the chat template adds text to a system message that is only "
                            f"{COT}: {before!r} + {COT} + {after!r}")
    ids = processor.tokenizer.encode(with_cot, add_special_tokens=False)
    cot_id = _single_id(processor.tokenizer, COT)
    if ids.count(cot_id) != 1:
        raise TemplateError(f"{COT} is not one token in the rendered system message")
    return with_cot


def check_prefix_preserving(processor: Any, prompt: list[dict[str, Any]],
                            completion: list[dict[str, Any]]) -> None:
    """Raise unless the prompt rendered with the generation cue is a prefix of the whole
    conversation: TRL's prompt-completion loss masks exactly that prefix."""
    head = _render(processor, prompt, add_generation_prompt=True)
    whole = _render(processor, [*prompt, *completion])
    if not whole.startswith(head):
        raise TemplateError(
            "the chat template renders the prompt differently inside the whole conversation, so "
            f"the completion cannot be masked by prefix: {head[-80:]!r} vs "
            f"{whole[:len(head)][-80:]!r}; use loss_mask: assistant_markers"
        )
