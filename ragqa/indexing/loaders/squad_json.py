"""SQuAD-format JSON (.json): one document per paragraph, with the id rule and the parser of
``ragqa.indexing.squad``; a bad article or paragraph skips only itself."""

from __future__ import annotations

import json

from ragqa.files import describe_json_error
from ragqa.indexing.documents import MAX_LISTED, Document, loads_storable, LoadWarning, Skip, SourceFile, Warn


def _listed(items: list[str], total: int) -> str:
    return ", ".join(items) + (", ..." if total > len(items) else "")


def load(sf: SourceFile, text: str, warn: Warn) -> list[Document]:
    """One document per SQuAD paragraph, with the id rule and parser of ``ragqa.indexing.squad``."""
    from ragqa.indexing.squad import is_squad, parse_squad

    shown = str(sf.path)
    try:
        obj = loads_storable(text)
    except json.JSONDecodeError as e:
        raise Skip(f"skipped: {describe_json_error(e)}", line=e.lineno) from None
    except ValueError as e:
        raise Skip(f"skipped: {describe_json_error(e)}") from None
    if not is_squad(obj):
        raise Skip("skipped: not a SQuAD-format json file; use .jsonl with one document per line")
    docs: list[Document] = []
    dup_titles: list[str] = []
    bad_articles: list[str] = []  # the first few, described; n_bad_articles counts them all
    bad_paragraphs: list[str] = []
    n_bad_articles = n_bad_paragraphs = 0
    for article in parse_squad(obj):
        title = article.title
        if article.paragraphs is None:
            n_bad_articles += 1
            if len(bad_articles) < MAX_LISTED:
                bad_articles.append(f"#{article.position} {title!r} ({article.problem})")
            continue
        if article.duplicate:
            dup_titles.append(title)
            continue
        for para in article.paragraphs:
            if not para.has_text:
                n_bad_paragraphs += 1
                if len(bad_paragraphs) < MAX_LISTED:
                    what = "" if para.is_object else f" ({para.problem})"
                    bad_paragraphs.append(f"{title!r} #{para.position}{what}")
                continue
            docs.append(
                Document(
                    para.id,
                    para.context,  # kept byte-for-byte: SQuAD answer_start offsets point into it
                    title=article.display_title,
                    source=sf.source,
                    metadata={"article": title, "paragraph": para.position,
                              "question_ids": [q.id for q in para.questions if q.id is not None]},
                )
            )
    if n_bad_articles:
        warn(LoadWarning(shown, f"skipped {n_bad_articles} article(s) without a \"paragraphs\" array "
                                f"({_listed(bad_articles, n_bad_articles)}); give each article "
                                '"paragraphs": [{"context": ...}, ...]'))
    if dup_titles:
        names = ", ".join(repr(t) for t in dup_titles[:3]) + (" ..." if len(dup_titles) > 3 else "")
        warn(LoadWarning(shown, f"skipped {len(dup_titles)} article(s) with a title already used ({names})"))
    if n_bad_paragraphs:
        warn(LoadWarning(shown, f'skipped {n_bad_paragraphs} paragraph(s) with a missing or empty "context" '
                                f"({_listed(bad_paragraphs, n_bad_paragraphs)}); give each paragraph a "
                                '"context" string'))
    return docs
