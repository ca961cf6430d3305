"""How a page becomes pixels. The policy is part of every image's identity: its `key` goes into the
render index next to each image, so images made under different settings never mix."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

POINTS_PER_INCH = 72.0


class RenderPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dpi: int = Field(144, ge=18, le=1200, description="resolution before the max_side cap")
    max_side: int = Field(1280, ge=64, description="longest image side in pixels, at most")
    format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG only")
    # zlib level 6-9 costs 3-5x the render itself; 1 keeps encoding cheaper than rendering.
    png_compress_level: int = Field(1, ge=0, le=9, description="PNG only")

    @property
    def key(self) -> str:
        """Stable name of everything that changes the image bytes (the other format's knob is left
        out, so changing the JPEG quality does not invalidate PNGs)."""
        encoding = (
            f"z{self.png_compress_level}" if self.format == "png" else f"q{self.jpeg_quality}"
        )
        return f"{self.format}-{self.dpi}dpi-max{self.max_side}-{encoding}"

    @property
    def mime(self) -> str:
        return f"image/{self.format}"

    @property
    def suffix(self) -> str:
        return ".png" if self.format == "png" else ".jpg"

    def scale(self, width_pt: float, height_pt: float) -> float:
        """Pixels per PDF point: the policy's dpi, lowered so the longest side fits max_side.

        PDFium sizes the bitmap as ceil(points * scale); the cap is shrunk by a hair so that float
        rounding never yields max_side + 1."""
        by_dpi = self.dpi / POINTS_PER_INCH
        by_cap = self.max_side / max(width_pt, height_pt) * (1 - 1e-9)
        return min(by_dpi, by_cap)
