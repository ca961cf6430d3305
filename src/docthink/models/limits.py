"""What one request costs a server, estimated before it is sent, and what the server takes.

Estimates are upper bounds, so a recipe that passes the check fits:
- an image: Qwen-VL's rule (`ImageTokens`) on the pixel size the render policy gives the page,
  plus its two delimiter tokens;
- text: its UTF-8 bytes (a byte-level BPE tokenizer, as Qwen's, never makes more tokens than
  bytes; English runs about 4 bytes a token, so text is overestimated, images are not);
- the chat template: `TEMPLATE_TOKENS` per message and per request;
- the output: the request's `max_tokens`, which the server reserves in full (vLLM refuses a request
  whose prompt and max_tokens exceed max_model_len).

A server's context length is read from its `/v1/models` (vLLM lists `max_model_len` per model)
unless the spec states it; the images per prompt vLLM takes are not published, so only a stated
limit is checked."""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from dataclasses import dataclass

from docthink.corpus.policy import RenderPolicy
from docthink.models.openai_compat import api_key
from docthink.models.specs import ImageTokens, OpenAIModelSpec

log = logging.getLogger(__name__)

TEMPLATE_TOKENS = 16  # per message (<|im_start|>role ... <|im_end|>) and once per request
VISION_DELIMITERS = 2  # <|vision_start|> <|vision_end|> around each image


def page_pixels(size_pt: tuple[float, float], policy: RenderPolicy) -> tuple[int, int]:
    """The (width, height) in pixels `policy` renders a page of this size to (as the renderer:
    ceil(points x scale))."""
    width, height = size_pt
    scale = policy.scale(width, height)
    return math.ceil(width * scale), math.ceil(height * scale)


def smart_resize(width: int, height: int, factor: int, min_pixels: int,
                 max_pixels: int) -> tuple[int, int]:
    """(width, height) after Qwen-VL's processor resize (transformers' `smart_resize`): each side
    rounded to a multiple of `factor` (patch times merge size), then the pixel count scaled into
    [min_pixels, max_pixels] with the aspect ratio kept as closely as possible."""
    f = factor
    h, w = round(height / f) * f, round(width / f) * f
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(f, math.floor(height / beta / f) * f)
        w = max(f, math.floor(width / beta / f) * f)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return w, h


def image_tokens(width: int, height: int, rule: ImageTokens) -> int:
    """Tokens of one image of this size, delimiters included."""
    f = rule.token_pixels
    w, h = smart_resize(width, height, f, rule.min_pixels, rule.max_pixels)
    return (h // f) * (w // f) + VISION_DELIMITERS


def text_tokens(*texts: str) -> int:
    """At most this many tokens (UTF-8 bytes)."""
    return sum(len(t.encode("utf-8")) for t in texts)


@dataclass(frozen=True)
class Served:
    """What a server takes for one model, and where each figure came from."""

    images_per_prompt: int | None
    max_model_len: int | None
    source: str  # "stated", "read from URL", or why it is unknown


def served_limits(spec: OpenAIModelSpec) -> Served:
    """The spec's stated limits; an unstated context length read from the endpoints'
    `/v1/models` (the smallest, if they differ)."""
    stated = spec.limits
    if stated.max_model_len is not None:
        return Served(stated.images_per_prompt, stated.max_model_len, "as the recipe states")
    lengths, unknown = [], []
    for endpoint in spec.endpoints:
        url = endpoint.base_url.rstrip("/") + "/models"
        length, why = _listed_length(url, spec.model, api_key(endpoint), min(spec.timeout_s, 10.0))
        if length is None:
            unknown.append(f"{url}: {why}")
        else:
            lengths.append(length)
    if unknown:
        log.info("%s: max_model_len unknown (%s); the context length is not checked",
                 spec.model, "; ".join(unknown))
        return Served(stated.images_per_prompt, None, "; ".join(unknown))
    urls = ", ".join(e.base_url.rstrip("/") + "/models" for e in spec.endpoints)
    return Served(stated.images_per_prompt, min(lengths), f"read from {urls}")


def _listed_length(url: str, model: str, key: str | None,
                   timeout_s: float) -> tuple[int | None, str]:
    """max_model_len of `model` as `url` lists it, or None and why not."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            listing = json.loads(response.read())
    except urllib.error.HTTPError as error:
        return None, f"http {error.code}"
    except urllib.error.URLError as error:
        return None, f"unreachable ({error.reason})"
    except OSError as error:  # a timeout or a reset while reading
        return None, f"unreachable ({error})"
    except json.JSONDecodeError:
        return None, "not JSON"
    cards = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(cards, list):
        return None, "no model list"
    for card in cards:
        if isinstance(card, dict) and card.get("id") == model:
            length = card.get("max_model_len")
            return (length, "") if isinstance(length, int) else (None, "no max_model_len listed")
    return None, f"{model!r} not listed"
