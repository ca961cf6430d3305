"""The official MMLongBench-Doc scoring rules, rule by rule and quirk by quirk, without ever
executing model output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docthink.evals.scoring import anls, clean, is_exact_type, score
from tests.evals.helpers import NO_SHARED_DATA, SAMPLES

# -- cleaning and exact types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("  Revenue (USD) ", "revenue"),  # a (...) group goes with the spaces before it
        ("a (b) c (d)", "a c"),
        ("'Paris'", "paris"),  # one leading and one trailing quote
        ('"a"b"', 'a"b'),
        ("''x''", "'x'"),  # only one of each
        ("$8", "8"),
        ("$$8", "8"),  # lstrip: every leading $
        ("8%", "8"),
        (" $ 8 % ", "8"),
        ("5 miles", "5 miles"),  # the official mile/million stripping is discarded
        ("5 mile", "5 mile"),
        ("3 million", "3 million"),
        (12, "12"),
    ],
)
def test_clean(raw: object, cleaned: str) -> None:
    assert clean(raw) == cleaned


@pytest.mark.parametrize(
    "text",
    ["https://x.org/a", "main.py", "demo.ipynb", "page 5", "12", "12-34", "12 34", "10 a.m.",
     "3 p.m. sharp", "2021-05-06", "2021 05 06", "2021-05", "2021 05", "a.b@c-d.org"],
)
def test_exact_types(text: str) -> None:
    assert is_exact_type(text)


@pytest.mark.parametrize("text", ["12-34-56", "12.5", "paris", "http://x.org", "-12", "2021/05"])
def test_not_exact_types(text: str) -> None:
    assert not is_exact_type(text)


# -- ANLS -------------------------------------------------------------------------------------------


def test_anls_threshold_and_empty_strings() -> None:
    assert anls("abcd", "abcx") == 0.75
    assert anls("abcd", "abxy") == 0.0  # exactly 0.5 is set to 0
    assert anls("", "") == 1.0
    assert anls("abc", "") == 0.0


def test_anls_measures_length_after_upper_as_the_official_code() -> None:
    # "ß".upper() == "SS": the length is 4, not 3, so 1 - 1/4.
    assert anls("aßb", "ab") == 0.75


# -- Str / None -------------------------------------------------------------------------------------


def test_not_answerable_with_a_period_is_about_0_933() -> None:
    assert score("Not answerable", "Not answerable.", "None") == pytest.approx(1 - 1 / 15)
    assert score("Not answerable", "Not answerable.", "None") == pytest.approx(0.9333, abs=1e-4)
    assert score("Not answerable", "not answerable", "None") == 1.0


def test_str_is_case_and_decoration_insensitive_through_cleaning() -> None:
    assert score("Less well-off", "less well-off (mostly)", "Str") == 1.0
    assert score("'Paris'", "PARIS", "Str") == 1.0


def test_exact_type_references_need_equality() -> None:
    assert score("2021-05", "2021-06", "Str") == 0.0  # ANLS would give 0.86
    assert score("Page 5", "page 5", "Str") == 1.0
    assert score("https://a.org/x", "https://a.org/y", "Str") == 0.0
    assert score("10 a.m.", "10 am", "Str") == 0.0


def test_discarded_mile_million_stripping_keeps_the_suffix() -> None:
    assert score("5 miles", "5", "Str") == 0.0  # would be 1 if the stripping had effect
    assert score("3", "3 million", "Float") == 0.0
    assert score("5 miles", "5 miles", "Str") == 1.0


# -- Int --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "prediction", "expected"),
    [
        ("8", "8", 1.0),
        ("8", "8.9", 1.0),  # int(float(pred)) truncates
        ("8", "8.0", 1.0),
        ("-3", "-3.7", 1.0),
        ("8", " 8 ", 1.0),
        ("1000", "1,000", 0.0),  # no cleaning for Int
        ("8", "$8", 0.0),
        ("8", "8%", 0.0),
        ("8", "eight", 0.0),
        ("8", "inf", 0.0),  # OverflowError, caught as the official bare except does
        ("8", "nan", 0.0),
        ("21%", "21", 0.0),  # a reference that is not an integer never scores
        ("1000", "1_000", 1.0),  # Python's float() accepts digit separators
        ("", "anything", 1.0),  # the official code then compares the raw reference with ""
    ],
)
def test_int(reference: str, prediction: str, expected: float) -> None:
    assert score(reference, prediction, "Int") == expected


# -- Float ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "prediction", "expected"),
    [
        ("18.29", "0.1829", 1.0),  # reference / 100
        ("18.29", "1829", 1.0),  # reference * 100
        ("17.5", "17.6", 1.0),  # within 1% relative
        ("17.5", "17.7", 0.0),  # 1.14% off
        ("0.5", "50%", 1.0),  # cleaning strips %
        ("$3.5", "3.5", 1.0),
        ("0.123", "0.12", 1.0),  # both rounded to max(min(2, 3), 2) = 2 places
        ("0.00001", "0.00002", 1.0),  # str(2e-05) has no ".": 3 places, both round to 0.0
        ("2.5", "2.7", 0.0),
        ("abc", "1.0", 0.0),  # the official code raises here; its runner scores 0
        ("1.5", "about 1.5", 0.0),
        ("1.5", "", 0.0),
    ],
)
def test_float(reference: str, prediction: str, expected: float) -> None:
    assert score(reference, prediction, "Float") == expected


# -- List -------------------------------------------------------------------------------------------


def test_list_anls_is_the_minimum_over_items_paired_in_sorted_order() -> None:
    value = score("['Circle', 'Rectangle']", "['Rectangle', 'Circel']", "List")
    assert value == pytest.approx(1 - 2 / 6)
    assert value == pytest.approx(0.667, abs=1e-3)


def test_list_rules() -> None:
    assert score("['a', 'b']", "['a']", "List") == 0.0  # lengths differ
    assert score("[1, 2]", "['2', '1']", "List") == 1.0  # numeric: all items equal, any order
    assert score("[1, 2]", "[1, 3]", "List") == 0.0
    assert score("['2021-05', '2021-06']", "['2021-05', '2021-07']", "List") == 0.0  # exact type
    assert score("92", "92", "List") == 1.0  # not a literal: a one-item list
    assert score("92", "[92]", "List") == 1.0
    assert score("['Paris']", "Paris", "List") == 1.0
    assert score("('a', 'b')", "('a', 'b')", "List") == 1.0  # no "[": one item, the whole text


def test_list_joined_comparison_quirk() -> None:
    # Numeric/exact lists are compared as "-".join(items): ["1-2", "3"] equals ["1", "2-3"].
    assert score("['1-2', '3']", "['1', '2-3']", "List") == 1.0


def test_empty_reference_list_scores_zero() -> None:
    assert score("[]", "[]", "List") == 0.0  # the official code raises IndexError
    assert score("[]", "['x']", "List") == 0.0


def test_predictions_that_are_not_literals_score_zero() -> None:
    assert score("['a', 'b']", "['a', b]", "List") == 0.0
    assert score("[2]", "[1+1]", "List") == 0.0  # official eval() would score 1: we never run it
    assert score("['a']", "[", "List") == 0.0
    assert score("['a']", "[" * 10_000 + "]" * 10_000, "List") == 0.0


def test_model_output_is_never_executed(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payloads = [
        f"[__import__('os').system('touch {target}')]",
        f"[exec(\"open('{target}', 'w')\")]",
        f"[(lambda: __import__('pathlib').Path('{target}').touch())()]",
    ]
    for payload in payloads:
        for fmt in ("List", "Str", "Int", "Float", "None"):
            assert score("['a']" if fmt == "List" else "a", payload, fmt) == 0.0  # type: ignore[arg-type]
    assert not target.exists()


# -- every reference against itself -----------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not SAMPLES.exists(), reason=NO_SHARED_DATA)
def test_every_reference_scores_one_against_itself_except_five() -> None:
    rows = json.loads(SAMPLES.read_text())
    assert len(rows) == 1082
    scores = {i: score(r["answer"], r["answer"], r["answer_format"]) for i, r in enumerate(rows)}
    below = {i: s for i, s in scores.items() if s != 1.0}
    # Four Int rows whose answer is not an integer, and the one List row whose answer is [].
    assert below == {73: 0.0, 210: 0.0, 732: 0.0, 734: 0.0, 972: 0.0}
    assert [rows[i]["answer"] for i in (210, 732, 734, 972)] == ["21%", "14:04 CET", "yes", "GPT-4"]
    assert {rows[i]["answer_format"] for i in (210, 732, 734, 972)} == {"Int"}
    assert (rows[73]["answer"], rows[73]["answer_format"]) == ("[]", "List")
