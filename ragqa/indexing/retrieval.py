"""Turning ranked lists into results: hits, reciprocal rank fusion, one best chunk per document."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field


def dataclass_json(obj) -> dict:
    """A dataclass as a JSON-ready dict, leaving out fields that are None."""
    return {k: v for k, v in asdict(obj).items() if v is not None}


@dataclass
class Hit:
    doc_id: str
    chunk_id: int
    score: float
    text: str
    source: str
    title: str
    page: int | None = None
    metadata: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return dataclass_json(self)


@dataclass
class Retrieval:
    hits: list[Hit]
    top_similarity: float | None  # best dense cosine similarity to the question (None in bm25 mode)
    # the best idf-weighted share of the question's terms found in one of the hits (BM25Index.coverage;
    # 0 unless retrieve_batch was asked for it)
    coverage: float = 0.0


def rrf(ranked_lists: Sequence[Sequence[Hashable]], k: int = 60) -> list[tuple[Hashable, float]]:
    """Reciprocal rank fusion: score(d) = sum over lists of 1 / (k + rank), rank from 1.

    >>> rrf([[1, 2], [2, 3]], k=60)[0][0]
    2
    """
    scores: dict[Hashable, float] = {}
    for ranked in ranked_lists:
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    # ties keep the order of first appearance (dict order), so results are deterministic
    return sorted(scores.items(), key=lambda kv: -kv[1])


def best_per_doc(hits: Sequence[tuple[int, float]], doc_of: Callable[[int], str]) -> list[tuple[int, float]]:
    """Keep the first (best) chunk of each document, order preserved."""
    seen: set[str] = set()
    out = []
    for cid, score in hits:
        doc = doc_of(cid)
        if doc not in seen:
            seen.add(doc)
            out.append((cid, score))
    return out
