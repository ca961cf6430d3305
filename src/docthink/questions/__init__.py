"""Questions and what they are asked over: page embeddings, hard negatives, long contexts,
single-page / multi-page / unanswerable questions, and model-free training tasks. Their rows are
the input of `synth/`; their prompt files are in `prompts/`."""

from pathlib import Path

from docthink.core.prompts import PromptFolder

PROMPTS = PromptFolder(Path(__file__).parent / "prompts")
