"""The words of the method that training data, training and evaluation must agree on."""

from __future__ import annotations

from typing import Literal

# The control token that switches the reasoning trace on (papers: "<cot>").
COT = "<cot>"
# A trace is written between these.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Every token the method adds to a tokenizer.
CONTROL_TOKENS = (COT, THINK_OPEN, THINK_CLOSE)
# MMLongBench-Doc's answer for a question its document does not answer.
NOT_ANSWERABLE = "Not answerable"

# Where an SFT example puts <cot>: a system message that is exactly <cot>, a prefix or suffix of
# the user turn, or nowhere (then the example has no trace either).
Placement = Literal["system", "prefix", "suffix", "none"]
# What an SFT example is: a question with a reasoning trace (whatever its placement), or plain
# long-document QA (no trace, no token).
ExampleKind = Literal["trace", "plain"]
