"""One SQuAD parser, one id rule: the index, evaluation and training read a SQuAD file through
ragqa.indexing.squad. The ids below were computed with the three separate parsers this replaced
(before issue #18) and must never change: existing indexes and reports depend on them."""

import json

import pytest

from ragqa.errors import ConfigError, InputNotFound
from ragqa.evaluation.evaluate import load_qa_data
from ragqa.indexing.documents import load_paths
from ragqa.indexing.squad import load_squad, paragraph_id, parse_squad
from ragqa.training.data import import_squad

ODD = "Caf\u00e9_\u00dcn\u00efc\u00f8d\u00e9_\U0001F5FC \"quoted\" / back\\slash"
SQUAD = {"version": "1.1", "data": [
    {"title": "Eiffel_Tower", "paragraphs": [
        {"context": "The Eiffel Tower is in Paris.", "qas": [
            {"id": "q1", "question": "Where is the Eiffel Tower?",
             "answers": [{"text": "Paris", "answer_start": 23}, {"text": "Paris", "answer_start": 23},
                         {"text": "in Paris", "answer_start": 20}]}]},
        {"context": "", "qas": [{"id": "q-empty", "question": "Empty context?",
                                 "answers": [{"text": "x", "answer_start": 0}]}]},
        {"context": "It was finished in 1889.", "qas": [
            {"id": 42, "question": "When was it finished?", "answers": [{"text": "1889", "answer_start": 19}]},
            {"id": "q-impossible", "question": "Who painted it blue?", "answers": [], "is_impossible": True}]}]},
    {"title": "C#_(programming language)", "paragraphs": [
        {"context": "C# is a language by Microsoft.", "qas": [
            {"id": "q3", "question": "Who made C#?", "answers": [{"text": "Microsoft", "answer_start": 20}]}]}]},
    {"title": ODD, "paragraphs": [
        {"context": "Caf\u00e9 text with \u00fc and \U0001F5FC.", "qas": [
            {"id": "q4", "question": "What is in the text?", "answers": [{"text": "\u00fc", "answer_start": 15}]}]}]},
    {"title": "Eiffel_Tower", "paragraphs": [  # a duplicate title
        {"context": "A duplicate article about the tower.", "qas": [
            {"id": "q5", "question": "Is this a duplicate?", "answers": [{"text": "duplicate", "answer_start": 2}]}]}]},
    {"title": " Padded  title ", "paragraphs": [
        {"context": "Padded context.", "qas": [
            {"id": "q6", "question": "Padded?", "answers": [{"text": "Padded", "answer_start": 0}]}]}]},
]}
ODD_DISPLAY = ODD.replace("_", " ")


@pytest.fixture
def squad_path(tmp_path):
    path = tmp_path / "odd-squad.json"
    path.write_text(json.dumps(SQUAD, ensure_ascii=False), encoding="utf-8")
    return path


def test_index_document_ids_are_pinned(squad_path):
    warnings = []
    docs = load_paths([squad_path], warn=warnings.append)
    assert [(d.doc_id, d.title, d.metadata) for d in docs] == [
        ("Eiffel_Tower#0", "Eiffel Tower", {"article": "Eiffel_Tower", "paragraph": 0, "question_ids": ["q1"]}),
        ("Eiffel_Tower#2", "Eiffel Tower", {"article": "Eiffel_Tower", "paragraph": 2,
                                            "question_ids": ["42", "q-impossible"]}),
        ("C#_(programming language)#0", "C# (programming language)",
         {"article": "C#_(programming language)", "paragraph": 0, "question_ids": ["q3"]}),
        (f"{ODD}#0", ODD_DISPLAY, {"article": ODD, "paragraph": 0, "question_ids": ["q4"]}),
        (" Padded  title #0", " Padded  title ", {"article": " Padded  title ", "paragraph": 0, "question_ids": ["q6"]}),
    ]
    assert docs[1].text == "It was finished in 1889."  # byte for byte
    assert [str(w).split(": ", 2)[2] for w in warnings] == [
        "skipped 1 article(s) with a title already used ('Eiffel_Tower')",
        "skipped 1 paragraph(s) with a missing or empty \"context\" ('Eiffel_Tower' #1); "
        "give each paragraph a \"context\" string"]


def test_evaluation_gold_ids_are_pinned(squad_path):
    items = load_qa_data(squad_path)
    assert [(i.id, i.gold_doc, i.answers, i.title, i.context) for i in items] == [
        ("q1", "Eiffel_Tower#0", ["Paris", "in Paris"], "Eiffel Tower", "The Eiffel Tower is in Paris."),
        ("q-empty", "Eiffel_Tower#1", ["x"], "Eiffel Tower", ""),
        ("42", "Eiffel_Tower#2", ["1889"], "Eiffel Tower", "It was finished in 1889."),
        ("q-impossible", "Eiffel_Tower#2", [], "Eiffel Tower", "It was finished in 1889."),
        ("q3", "C#_(programming language)#0", ["Microsoft"], "C# (programming language)",
         "C# is a language by Microsoft."),
        ("q4", f"{ODD}#0", ["\u00fc"], ODD_DISPLAY, "Caf\u00e9 text with \u00fc and \U0001F5FC."),
        # the duplicate article's questions keep <title>#<position> (the index holds the first article's)
        ("q5", "Eiffel_Tower#0", ["duplicate"], "Eiffel Tower", "A duplicate article about the tower."),
        ("q6", " Padded  title #0", ["Padded"], " Padded  title ", "Padded context."),
    ]


def test_training_passage_ids_are_pinned(squad_path):
    records = import_squad(squad_path)
    assert [(r.id, r.doc, r.provenance["passage_id"], r.title, r.output, r.answers) for r in records] == [
        ("q1", "Eiffel_Tower", "Eiffel_Tower#0", "Eiffel Tower", "Paris", ["Paris", "in Paris"]),
        ("42", "Eiffel_Tower", "Eiffel_Tower#2", "Eiffel Tower", "1889", ["1889"]),
        ("q3", "C#_(programming language)", "C#_(programming language)#0", "C# (programming language)",
         "Microsoft", ["Microsoft"]),
        ("q4", ODD, f"{ODD}#0", ODD_DISPLAY, "\u00fc", ["\u00fc"]),
        ("q5", "Eiffel_Tower", "Eiffel_Tower#0", "Eiffel Tower", "duplicate", ["duplicate"]),
        ("q6", " Padded  title ", " Padded  title #0", " Padded  title ", "Padded", ["Padded"]),
    ]


@pytest.mark.parametrize("title", [None, "", "   ", 5, "missing"])
def test_untitled_articles_get_the_index_id_everywhere(tmp_path, title):
    """A title that is missing or not a non-blank string is article_<i> for all three readers
    (evaluation used to crash or say "#0", training "   #0" / "5#0": ids the index never had)."""
    article = {"paragraphs": [{"context": "Some text.", "qas": [
        {"id": "a", "question": "q?", "answers": [{"text": "Some", "answer_start": 0}]}]}]}
    if title != "missing":
        article["title"] = title
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"data": [{"title": "First", "paragraphs": [{"context": "f."}]}, article]}))
    assert [d.doc_id for d in load_paths([path], warn=lambda w: None)] == ["First#0", "article_1#0"]
    assert [i.gold_doc for i in load_qa_data(path)] == ["article_1#0"]
    assert [(r.doc, r.provenance["passage_id"]) for r in import_squad(path)] == [("article_1", "article_1#0")]


def test_lone_surrogates_become_the_index_id(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"data": [{"title": "\\ud800x_y", "paragraphs": [{"context": "c.", "qas": '
                    '[{"id": "a", "question": "q?", "answers": [{"text": "c", "answer_start": 0}]}]}]}]}')
    assert [d.doc_id for d in load_paths([path], warn=lambda w: None)] == ["\ufffdx_y#0"]
    assert [i.gold_doc for i in load_qa_data(path)] == ["\ufffdx_y#0"]
    assert [r.provenance["passage_id"] for r in import_squad(path)] == ["\ufffdx_y#0"]


def test_parser_keeps_everything_and_flags_what_the_index_skips():
    articles = parse_squad({"data": [{"title": "A", "paragraphs": ["x", {"context": " "}, {"context": "t"}]},
                                     {"title": "B"}, {"title": "A", "paragraphs": []}]})
    a, b, dup = articles
    assert [p.id for p in a.paragraphs] == ["A#0", "A#1", "A#2"] == [paragraph_id("A", i) for i in range(3)]
    assert [(p.is_object, p.has_text) for p in a.paragraphs] == [(False, False), (True, False), (True, True)]
    assert a.paragraphs[0].problem == "a string, not an object"
    assert b.paragraphs is None and b.problem == 'no "paragraphs"' and not b.duplicate
    assert dup.duplicate and not a.duplicate


def test_load_squad_errors(tmp_path):
    with pytest.raises(InputNotFound, match="no such file"):
        load_squad(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [,]}')
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON \(Expecting value at line 1 column 11\)"):
        load_squad(bad)
    bad.write_text('{"data": [{"title": "no paragraphs"}]}')
    with pytest.raises(ConfigError, match="not SQuAD format"):
        load_squad(bad)
    with pytest.raises(ConfigError, match="not SQuAD format"):
        load_qa_data(bad)
