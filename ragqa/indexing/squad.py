"""SQuAD-format JSON: the one parser, and the one rule for a paragraph's id.

    {"data": [{"title": "Eiffel_Tower",
               "paragraphs": [{"context": "The Eiffel Tower is in Paris. ...",
                               "qas": [{"id": "q1", "question": "Where is it?",
                                        "answers": [{"text": "Paris", "answer_start": 23}],
                                        "is_impossible": false}]}]}]}

A paragraph's id is ``<title>#<position>`` (:func:`paragraph_id`): the article's title exactly
as written (not stripped; ``article_<i>``, i its position in "data", when the title is missing,
empty, blank or not a string) and the paragraph's position in the article's "paragraphs" array,
paragraphs that are skipped counted too. It is the document id ``ragqa index build`` gives the
paragraph and the gold document id that ``ragqa eval qa`` and ``ragqa data import`` use, so all
three read files through :func:`parse_squad` (the index: ``documents.load_file``; evaluation and
training: :func:`load_squad`). Lone surrogates in strings become U+FFFD (``storable``), as the
index stores them.

The parser keeps everything and judges nothing: each reader decides what it uses. The index
skips articles without a "paragraphs" array, articles whose title an earlier one already used
(``duplicate``: their ids would collide) and paragraphs without text, with a warning;
evaluation and training read every question (a duplicate article's questions keep the ids
``<title>#<position>``, which in the index name the first article's paragraphs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragqa.errors import ConfigError, InputNotFound
from ragqa.files import a_json_type, describe_json_error
from ragqa.indexing.documents import loads_storable

__all__ = ["SquadArticle", "SquadParagraph", "SquadQuestion", "article_title", "is_squad", "load_squad",
           "paragraph_id", "parse_squad"]


def article_title(article: Any, position: int) -> str:
    """The title ids are made of: the article's "title" as written, or ``article_<position>``
    when it is not a string with something other than whitespace in it."""
    title = article.get("title") if isinstance(article, dict) else None
    return title if isinstance(title, str) and title.strip() else f"article_{position}"


def paragraph_id(title: str, position: int) -> str:
    """``<title>#<position>``: the id of a SQuAD paragraph, in the index and as a gold document."""
    return f"{title}#{position}"


def _question_id(value: Any) -> str | None:
    """A question's "id" as text when it is a non-empty string or a number (as written, not stripped)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int) or (isinstance(value, float) and value == value):
        return str(value)
    return None


@dataclass(frozen=True)
class SquadQuestion:
    position: int            # in the paragraph's "qas"
    id: str | None           # None: missing, or not a non-empty string or number
    question: str | None     # the "question" string as written; None: missing or not a string
    answers: list[str]       # the distinct non-empty answer "text" strings, in order
    impossible: bool = False  # SQuAD 2.0 "is_impossible"


@dataclass(frozen=True)
class SquadParagraph:
    position: int             # in the article's "paragraphs"
    id: str                   # paragraph_id(article title, position)
    context: str | None       # byte for byte (answer_start offsets point into it); None: missing / not a string
    questions: list[SquadQuestion] = field(default_factory=list)
    problem: str | None = None  # the entry is not a JSON object: "a string, not an object"

    @property
    def is_object(self) -> bool:
        return self.problem is None

    @property
    def has_text(self) -> bool:
        """A context with something other than whitespace in it (what the index keeps)."""
        return isinstance(self.context, str) and bool(self.context.strip())


@dataclass(frozen=True)
class SquadArticle:
    position: int                            # in "data"
    title: str                               # article_title(): what ids are made of
    paragraphs: list[SquadParagraph] | None  # None: no "paragraphs" array (see ``problem``)
    problem: str | None = None               # why there are no paragraphs: 'no "paragraphs"', ...
    duplicate: bool = False                  # an earlier article with paragraphs has this title

    @property
    def display_title(self) -> str:
        """The title as people read it: underscores as spaces ("Eiffel_Tower" -> "Eiffel Tower")."""
        return self.title.replace("_", " ")


def is_squad(obj: Any) -> bool:
    """``{"data": [article, ...]}`` with at least one article that has a "paragraphs" array."""
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        return False
    return any(isinstance(a, dict) and isinstance(a.get("paragraphs"), list) for a in obj["data"])


def _question(position: int, qa: Any) -> SquadQuestion | None:
    if not isinstance(qa, dict):
        return None
    raw = qa.get("answers")
    texts = [a.get("text") for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []
    answers = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t))
    question = qa.get("question")
    return SquadQuestion(position, _question_id(qa.get("id")), question if isinstance(question, str) else None,
                         answers, bool(qa.get("is_impossible")))


def _paragraph(title: str, position: int, para: Any) -> SquadParagraph:
    pid = paragraph_id(title, position)
    if not isinstance(para, dict):
        return SquadParagraph(position, pid, None, problem=f"{a_json_type(para)}, not an object")
    context = para.get("context")
    qas = para.get("qas")
    questions = [q for i, qa in enumerate(qas if isinstance(qas, list) else []) if (q := _question(i, qa))]
    return SquadParagraph(position, pid, context if isinstance(context, str) else None, questions)


def parse_squad(obj: Any) -> list[SquadArticle]:
    """Every article of a decoded SQuAD file, in order (``[]`` when ``obj`` has no "data" list)."""
    data = obj.get("data") if isinstance(obj, dict) else None
    out: list[SquadArticle] = []
    seen: set[str] = set()
    for a, article in enumerate(data if isinstance(data, list) else []):
        title = article_title(article, a)
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            if not isinstance(article, dict):
                problem = f"{a_json_type(article)}, not an object"
            elif "paragraphs" not in article:
                problem = 'no "paragraphs"'
            else:
                problem = f'"paragraphs" is {a_json_type(paragraphs)}, not an array'
            out.append(SquadArticle(a, title, None, problem))
            continue
        duplicate = title in seen
        seen.add(title)
        out.append(SquadArticle(a, title, [_paragraph(title, p, para) for p, para in enumerate(paragraphs)],
                                duplicate=duplicate))
    return out


def load_squad(path: str | Path) -> list[SquadArticle]:
    """``parse_squad`` of a file, for evaluation and training: InputNotFound when there is no
    such file, ConfigError (one line, naming the file) when it is not SQuAD-format JSON."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path}: no such file")
    try:
        obj = loads_storable(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "convert it to UTF-8") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {describe_json_error(exc)}; give a SQuAD-format .json file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not is_squad(obj):
        raise ConfigError(f'{path}: not SQuAD format (needs a top-level "data" list of articles with '
                          '"paragraphs"); give a SQuAD-format .json file')
    return parse_squad(obj)
