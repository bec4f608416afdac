"""BM25 over chunk texts with bm25s (Lucene scoring, English stopwords, Snowball stemming),
persisted beside the index as .npy / .json files (no pickle: numpy arrays are saved and loaded
with allow_pickle=False)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IDS_FILE = "chunk_ids.npy"
# question words (as tokenize stems them) are not stopwords for search, but they say nothing about
# whether a passage covers the question
QUESTION_TERMS = frozenset(("what", "which", "who", "whom", "whose", "when", "where", "whi",
                            "how", "did", "doe", "do"))


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False,
                          show_progress=False)


class BM25Index:
    def __init__(self, retriever, chunk_ids: np.ndarray):
        self._retriever = retriever
        self.chunk_ids = chunk_ids
        self._df: np.ndarray | None = None

    @classmethod
    def build(cls, texts: Sequence[str], chunk_ids: Sequence[int]) -> BM25Index:
        import bm25s

        retriever = bm25s.BM25()  # method "lucene", k1 1.5, b 0.75
        if texts:
            corpus = bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), show_progress=False)
            retriever.index(corpus, show_progress=False)
        return cls(retriever, np.asarray(chunk_ids, dtype=np.int64))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if len(self.chunk_ids):
            self._retriever.save(str(directory))
        np.save(directory / IDS_FILE, self.chunk_ids, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        import bm25s

        ids = np.load(directory / IDS_FILE, allow_pickle=False)
        retriever = bm25s.BM25.load(str(directory), mmap=False) if len(ids) else bm25s.BM25()
        return cls(retriever, ids)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """(chunk id, score) best first; only chunks sharing a term with the query."""
        if not len(self.chunk_ids):
            return []
        vocab = self._retriever.vocab_dict
        tokens = [t for t in tokenize([query])[0] if t in vocab]
        if not tokens:
            return []
        scores = self._retriever.get_scores(tokens)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.chunk_ids[i]), float(scores[i])) for i in top if scores[i] > 0]

    def _doc_freq(self) -> np.ndarray:
        """Chunks containing each vocabulary term (the lengths of bm25s's per-term score lists), once."""
        if self._df is None:
            self._df = (np.diff(np.asarray(self._retriever.scores["indptr"])) if len(self.chunk_ids)
                        else np.zeros(0, dtype=np.int64))
        return self._df

    def coverage(self, query: str, texts: Sequence[str]) -> list[float]:
        """For each text, the share of the query's content terms (stopwords dropped, stemmed) it
        contains, each term weighted by its BM25 idf in this index; a term the index has never seen
        gets the highest idf. An off-topic question's rare terms (names, places) are missing
        from every passage, so its coverage stays low even when the embedding looks similar."""
        terms = set(tokenize([query])[0]) - QUESTION_TERMS
        if not terms or not texts:
            return [0.0 for _ in texts]
        n = len(self.chunk_ids)
        vocab = self._retriever.vocab_dict if n else {}
        df = self._doc_freq()
        idf = {t: float(np.log(1 + (n - (d := df[vocab[t]] if t in vocab else 0) + 0.5) / (d + 0.5)))
               for t in terms}
        total = sum(idf.values())
        if total <= 0:
            return [0.0 for _ in texts]
        return [sum(w for t, w in idf.items() if t in have) / total
                for have in map(set, tokenize(texts))]


def describe() -> str:
    return json.dumps({"method": "lucene", "k1": 1.5, "b": 0.75, "stopwords": "en", "stemmer": "english"})
