"""MMLongBench-Doc's scoring rules, reproduced exactly, except that model output is never executed.

The official scorer (`eval/eval_score.py` of mayubo2333/MMLongBench-Doc) is reproduced rule for
rule, quirks included, so scores are comparable with published numbers:

- `clean`: `str`, lowercase, trim; every `(...)` group is removed with the spaces before it; one
  leading and one trailing quote are dropped; leading `$` and trailing `%` are stripped. The
  official code also means to strip "mile(s)"/"million" suffixes but discards the result
  (`s.rstrip(...)` without assignment), so those suffixes stay.
- Int: `int(reference)` and `int(float(prediction))`, no cleaning; on any parse failure the
  official code compares the raw reference with "" (so only an empty reference scores 1).
- Float: both sides cleaned and parsed; the reference expands to {ref/100, ref, ref*100}; a
  candidate matches within 1% relative, or when both round equal at
  `max(min(decimals(pred), decimals(candidate)), 2)` places.
- Str / None: exact-type references (URLs, file names, `page...`, numbers, times, dates, e-mail)
  need equality of the cleaned strings; the others score ANLS with threshold 0.5.
- List: list literals are parsed with `ast.literal_eval` where the official code calls `eval`;
  lengths must agree; items are cleaned and sorted; numeric or exact-type lists need equality of
  the `-`-joined items, the others score the minimum ANLS over items paired in sorted order.

Where the official code raises (a reference `[]`, a prediction that is not a literal, a reference
that is not a number in a Float row), the official runner catches the error and scores 0; so do we.
A prediction that only `eval` could read (`[1+1]`, `[x]`) also scores 0: we never run it.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Literal

AnswerFormat = Literal["Int", "Float", "Str", "None", "List"]
ANSWER_FORMATS: tuple[AnswerFormat, ...] = ("Int", "Float", "Str", "None", "List")

_PARENTHESES = re.compile(r"\s*\([^)]*\)")
_EDGE_QUOTE = re.compile(r"^['\"]|['\"]$")
_NUMBER_GROUPS = re.compile(r"\b\d+(-\d+|\s\d+)?\b")
_DATE = re.compile(r"\b\d{4}[-\s]\d{2}[-\s]\d{2}\b")
_MONTH = re.compile(r"\b\d{4}[-\s]\d{2}\b")
_EMAIL = re.compile(r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}")


def clean(value: object) -> str:
    s = str(value).lower().strip()
    s = _PARENTHESES.sub("", s).strip()
    s = _EDGE_QUOTE.sub("", s).strip()
    s = s.strip().lstrip("$").strip()
    return s.strip().rstrip("%").strip()


def is_exact_type(s: str) -> bool:
    """Whether a cleaned reference must be matched exactly rather than by ANLS."""
    return (
        "https://" in s
        or s.endswith((".py", "ipynb"))
        or s.startswith("page")
        or _NUMBER_GROUPS.fullmatch(s) is not None
        or "a.m." in s
        or "p.m." in s
        or _DATE.fullmatch(s) is not None
        or _MONTH.fullmatch(s) is not None
        or _EMAIL.fullmatch(s) is not None
    )


def levenshtein(a: str, b: str) -> int:
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for j, cb in enumerate(b):
        current = [j + 1]
        for i, ca in enumerate(a):
            current.append(
                previous[i] if ca == cb else 1 + min(previous[i], previous[i + 1], current[-1])
            )
        previous = current
    return previous[-1]


def anls(reference: str, prediction: str, threshold: float = 0.5) -> float:
    # The official code measures length after .upper(), which can lengthen a string ("ß" -> "SS").
    length = max(len(reference.upper()), len(prediction.upper()))
    value = 1.0 - (levenshtein(reference, prediction) / length if length else 0.0)
    return 0.0 if value <= threshold else value


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _decimals(x: float) -> int:
    text = str(x)
    return len(text.split(".")[-1]) if "." in text else 3


def float_match(reference: float, prediction: float) -> bool:
    for candidate in (reference / 100, reference, reference * 100):
        if math.isclose(candidate, prediction, rel_tol=0.01):
            return True
        places = max(min(_decimals(prediction), _decimals(candidate)), 2)
        if round(prediction, places) == round(candidate, places):
            return True
    return False


def _score_int(reference: str, prediction: str) -> float:
    try:
        ref, pred = int(reference), int(float(prediction))
    except (ValueError, OverflowError):
        return float(reference == "")
    return float(ref == pred)


def _score_float(reference: str, prediction: str) -> float:
    try:
        ref, pred = float(clean(reference)), float(clean(prediction))
    except ValueError:
        return 0.0
    return float(float_match(ref, pred))


def _score_text(reference: str, prediction: str) -> float:
    ref, pred = clean(reference), clean(prediction)
    return float(ref == pred) if is_exact_type(ref) else anls(ref, pred)


def _as_list(value: str) -> list[object] | None:
    """A list literal as a list, other text as a one-item list; None if it is not a literal."""
    if not value.startswith("["):
        return [value]
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return parsed if isinstance(parsed, list) else [parsed]


def _score_list(reference: str, prediction: str) -> float:
    refs, preds = _as_list(reference), _as_list(prediction)
    if refs is None or preds is None or len(refs) != len(preds) or not refs:
        return 0.0
    ref_items = sorted(clean(x) for x in refs)
    pred_items = sorted(clean(x) for x in preds)
    if _is_float(ref_items[0]) or is_exact_type(ref_items[0]):
        return float("-".join(ref_items) == "-".join(pred_items))
    return min(anls(r, p) for r, p in zip(ref_items, pred_items, strict=True))


_SCORERS = {
    "Int": _score_int,
    "Float": _score_float,
    "Str": _score_text,
    "None": _score_text,
    "List": _score_list,
}


def score(reference: str, prediction: str, answer_format: AnswerFormat) -> float:
    """The official score of an extracted prediction against a reference, in [0, 1]."""
    return _SCORERS[answer_format](reference, prediction)


def scoreable(reference: str, answer_format: AnswerFormat) -> bool:
    """Whether the rules can credit any prediction for this reference: it scores 1 against
    itself. V1 has five that do not (a `[]` List, `21%`, `14:04 CET`, `yes` and `GPT-4` as Int)."""
    return score(reference, reference, answer_format) == 1.0
