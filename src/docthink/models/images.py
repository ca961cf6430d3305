"""Page images as OpenAI `image_url` content parts, encoded once per image and reused.

A page image is sent with many requests (evidence for each question, traces, answers), and its
base64 data URL is the bulk of every request body. So each image's whole JSON content part is
built once, keyed by the image's content hash, kept as bytes in an LRU bounded by bytes, and
spliced into request bodies as is: the large string is never re-serialized.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict

import orjson

from docthink.core.parts import ImagePart


class ImageUnreadable(Exception):
    """The image file is missing or does not match its content hash."""


class ImageParts:
    """JSON content parts (`{"type": "image_url", ...}` as bytes) by image content hash."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.encoded = 0  # images read and encoded so far (misses)
        self._parts: OrderedDict[str, bytes] = OrderedDict()

    def fragment(self, image: ImagePart) -> bytes:
        part = self._parts.get(image.sha256)
        if part is None:
            part = _encode(image)
            self.encoded += 1
            self._parts[image.sha256] = part
            self.size += len(part)
            self._evict()
        else:
            self._parts.move_to_end(image.sha256)
        return part

    def _evict(self) -> None:
        # Keep the newest part even when it alone exceeds the bound: the request needs it.
        while self.size > self.max_bytes and len(self._parts) > 1:
            _, part = self._parts.popitem(last=False)
            self.size -= len(part)


def _encode(image: ImagePart) -> bytes:
    # Read synchronously: a page image is ~100 KB from the page cache, read once per hash.
    try:
        data = image.path.read_bytes()
    except OSError as error:
        raise ImageUnreadable(f"{image.path}: {error.strerror}") from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != image.sha256:
        raise ImageUnreadable(f"{image.path}: content hash {digest} is not {image.sha256}")
    url = f"data:{image.mime};base64,{base64.b64encode(data).decode('ascii')}"
    return orjson.dumps({"type": "image_url", "image_url": {"url": url}})
