"""scripts/realdocs_check.py: how an answer on real documents is judged, and that the question
file is well formed. The full check (the real model on this machine's Debian documentation) is a
benchmark: `python scripts/realdocs_check.py`, docs/answering.md."""

import importlib.util
import json

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("realdocs_check", ROOT / "scripts" / "realdocs_check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


@pytest.mark.parametrize("answer, right", [
    ("-S [2]", True), ("-S", True), ("-s [2]", False), ("--size", False), ("use -S or --sort=size", True),
])
def test_options_are_matched_as_written(answer, right):
    assert check.is_right(answer, False, {"accept": ["-S"]}) is right


@pytest.mark.parametrize("answer, right", [
    ("No", True), ("no [1]", True), ("It is not supported.", True), ("Yes", False), ("None of them", False),
])
def test_yes_no_are_words(answer, right):
    assert check.is_right(answer, False, {"accept": ["no", "not"]}) is right


def test_all_and_any_abstention_and_case():
    both = {"accept": ["configuration", "matching"], "all": True}
    assert check.is_right("The Configuration module and the matching module", False, both)
    assert not check.is_right("the configuration module", False, both)
    assert not check.is_right("nobody [1]", True, {"accept": ["nobody"]})  # abstained: wrong
    off = {"question": "Who won?", "answerable": False}
    assert check.is_right("I don't know.", True, off) and check.is_right("I don't know.", False, off)
    assert not check.is_right("France", False, off)


def test_question_file():
    rows = [json.loads(line) for line in check.QUESTIONS.read_text(encoding="utf-8").splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) > 30
    for r in rows:
        assert r["question"].endswith("?")
        if r.get("answerable", True):
            assert r["accept"] and r["source"] in check.SOURCES
        else:
            assert "accept" not in r
