"""Evaluation: answer metrics (SQuAD exact match and token F1) and retrieval metrics against
qrels (BEIR format).

SQuAD metrics follow the official v1.1 script: lower-case, remove punctuation and the articles
a/an/the, collapse whitespace; EM and F1 take the maximum over the gold answers.

Definitions follow BEIR / pytrec_eval: nDCG@k with graded gains rel / log2(rank + 1) and the ideal
ranking of all judged-relevant documents; Recall@k = |relevant in top k| / |relevant|; MRR@k =
1 / rank of the first relevant document (0 when none in the top k). Queries without any relevant
document in the qrels are left out.
"""

from __future__ import annotations

import collections
import csv
import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

from ragqa.errors import ConfigError, InputNotFound


def normalize_answer(text: str) -> str:
    """>>> normalize_answer("The  Denver Broncos!")
    'denver broncos'
    """
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    return max((float(normalize_answer(prediction) == normalize_answer(g)) for g in golds), default=0.0)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        common = collections.Counter(p) & collections.Counter(g)
        same = sum(common.values())
        if same == 0:
            return 0.0
        precision, recall = same / len(p), same / len(g)
        return 2 * precision * recall / (precision + recall)

    return max((f1(prediction, g) for g in golds), default=0.0)


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """>>> round(ndcg_at_k(["a", "b"], {"b": 1}, 10), 4)
    0.6309
    """
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    rel = {d for d, g in relevant.items() if g > 0}
    return len(rel.intersection(ranked[:k])) / len(rel) if rel else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if relevant.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def retrieval_scores(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
                     ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
    """Mean nDCG@k, Recall@k and MRR@10 over the queries that have relevant documents."""
    qids = [q for q in qrels if any(g > 0 for g in qrels[q].values())]
    if not qids:
        raise ConfigError("the qrels hold no relevant documents")
    out: dict[str, float] = {"queries": len(qids)}
    for k in ks:
        out[f"ndcg@{k}"] = sum(ndcg_at_k(run.get(q, []), qrels[q], k) for q in qids) / len(qids)
        out[f"recall@{k}"] = sum(recall_at_k(run.get(q, []), qrels[q], k) for q in qids) / len(qids)
    out["mrr@10"] = sum(mrr_at_k(run.get(q, []), qrels[q], 10) for q in qids) / len(qids)
    return out


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV: ``query-id  corpus-id  score`` with a header line."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path}: no such qrels file")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or (n == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue
            try:
                qid, did, score = row[0], row[1], int(row[2])
            except (IndexError, ValueError):
                raise ConfigError(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score'") from None
            qrels.setdefault(qid, {})[did] = score
    return qrels


def read_queries(path: str | Path, text_key: str = "text") -> list[tuple[str, str]]:
    """JSONL lines with ``_id`` (or ``id``) and ``text_key`` -> [(id, text)]."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path}: no such file")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            qid = obj["_id"] if "_id" in obj else obj["id"]
            items.append((str(qid), str(obj[text_key])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f'{path}:{n}: expected a JSON object with "_id" (or "id") and "{text_key}"') from None
    return items


def evaluate_retrieval(index, queries: Sequence[tuple[str, str]], qrels: Mapping[str, Mapping[str, int]],
                       mode: str | None = None, k: int = 100, batch: int = 64) -> dict[str, float]:
    """Search every judged query (best chunk per document) and score the document rankings."""
    judged = [(q, t) for q, t in queries if q in qrels]
    run: dict[str, list[str]] = {}
    for start in range(0, len(judged), batch):
        part = judged[start:start + batch]
        for (qid, _), hits in zip(part, index.search_batch([t for _, t in part], k=k, mode=mode, per_doc=True)):
            run[qid] = [h.doc_id for h in hits]
    return retrieval_scores(run, qrels, ks=tuple(x for x in (1, 10, 100) if x <= k))
