"""The data recipe's trace stages: page evidence -> traces -> answers -> SFT examples, as plain
functions over typed rows, with their prompt files in `prompts/`."""

from pathlib import Path

from docthink.core.prompts import PromptFolder

PROMPTS = PromptFolder(Path(__file__).parent / "prompts")
