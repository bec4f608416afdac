"""Training data: import QA / summarisation / instruction data into one record format, split it by
document, and turn records into retrieval-aware training examples (as RAFT does).

A **record** is one fact to learn (JSONL, ``records.jsonl``)::

    {"id": "5733be28...", "task": "qa", "input": "To whom did the Virgin Mary ...?",
     "output": "Saint Bernadette Soubirous", "answers": ["Saint Bernadette Soubirous"],
     "context": "Architecturally, the school has ...", "title": "University of Notre Dame",
     "doc": "University_of_Notre_Dame", "source": "dev-v1.1.json"}

``task`` is ``qa`` (input = question, context = the gold passage), ``summarize`` (input = the
text, output = its summary) or ``instruct`` (input = instruction and input, output = response).
``doc`` is the group a split keeps together: the SQuAD article, the dialogue, the source document.

An **example** is what training reads (``train.jsonl`` / ``validation.jsonl`` / ``test.jsonl``):
the record's template, its passages (for qa: the gold passage among distractors ragqa's own
retriever returns, or distractors only with the target "I don't know."), the target text and the
answers it is scored against. ``build_dataset`` writes them with ``manifest.json`` (counts, seed,
fractions, the sha256 of every source and output file).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragqa.errors import ConfigError, InputNotFound
from ragqa.files import describe_json_error, file_sha256, read_jsonl, write_json_atomic, write_jsonl_atomic

TASKS = ("qa", "summarize", "instruct")
TASK_TEMPLATES = {"qa": "qa", "summarize": "summarize", "instruct": "instruct"}
SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class Record:
    id: str
    task: str
    input: str
    output: str
    answers: list[str] = field(default_factory=list)
    context: str = ""
    title: str = ""
    doc: str = ""
    source: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"record {self.id!r}: task {self.task!r} must be one of {', '.join(TASKS)}")
        if not self.answers and self.output:
            self.answers = [self.output]
        if not self.doc:
            self.doc = self.id

    def to_json(self) -> dict:
        data = asdict(self)
        if not data["provenance"]:
            data.pop("provenance")
        return data


@dataclass
class Example:
    id: str
    task: str
    template: str
    input: str
    target: str
    answers: list[str]
    passages: list[dict] = field(default_factory=list)  # {"title", "text", "doc_id"}
    gold: int | None = None  # 1-based number of the gold passage; None: absent (target abstains)
    doc: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> Example:
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


# ----------------------------------------------------------------------------- reading files

def _need(path: Path, n: int, obj: dict, *keys: str) -> list[str]:
    out = []
    for key in keys:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{path}:{n}: field {key!r} is missing or empty; every line needs "
                              f"{', '.join(repr(k) for k in keys)}")
        out.append(value.strip())
    return out


def import_squad(path: str | Path) -> list[Record]:
    """SQuAD v1.1 / v2.0 json -> qa records (one per question; unanswerable ones are skipped:
    abstention examples are made from retrieval instead). Read by ``ragqa.indexing.squad``, so
    ``provenance["passage_id"]`` is the id the index gives the paragraph; ``doc`` is the
    article's title."""
    from ragqa.indexing.squad import load_squad

    path = Path(path)
    records = []
    for article in load_squad(path):
        title = article.title
        for para in article.paragraphs or []:
            context = para.context or ""
            for q in para.questions:
                if q.impossible or not q.answers or not context:
                    continue
                if q.question is None:
                    raise ConfigError(f"{path}: question #{q.position} of paragraph {para.id!r} has no "
                                      "\"question\" string")
                records.append(Record(id=q.id or f"{title}#{para.position}#{len(records)}", task="qa",
                                      input=q.question.strip(), output=q.answers[0], answers=list(q.answers),
                                      context=context, title=article.display_title, doc=title,
                                      source=path.name, provenance={"passage_id": para.id}))
    if not records:
        raise ConfigError(f"{path}: no answerable questions found in this SQuAD file")
    return records


def import_dialogsum(path: str | Path) -> list[Record]:
    """DialogSum JSONL (``fname``, ``dialogue``, ``summary``; test files' ``summary1..3`` too)
    -> summarize records, one per dialogue."""
    path = Path(path)
    records = []
    for n, obj in read_jsonl(path):
        (dialogue,) = _need(path, n, obj, "dialogue")
        refs = [obj[k].strip() for k in ("summary", "summary1", "summary2", "summary3")
                if isinstance(obj.get(k), str) and obj[k].strip()]
        if not refs:
            raise ConfigError(f"{path}:{n}: field 'summary' is missing or empty")
        rid = str(obj.get("fname") or obj.get("id") or n)
        records.append(Record(id=rid, task="summarize", input=dialogue, output=refs[0], answers=refs,
                              title=str(obj.get("topic") or ""), doc=rid, source=path.name))
    return records


def import_jsonl(path: str | Path) -> list[Record]:
    """Generic JSONL: each line either ``question`` / ``context`` / ``answer`` (or ``answers``),
    ``instruction`` / ``input`` (optional) / ``output``, or ``dialogue`` / ``summary``. Optional
    ``id`` and ``doc`` (the split group; default: the context, so passages never straddle)."""
    path = Path(path)
    records = []
    for n, obj in read_jsonl(path):
        rid = str(obj.get("id") or f"{path.stem}-{n}")
        if "question" in obj:
            question, context = _need(path, n, obj, "question", "context")
            answers = obj.get("answers", obj.get("answer"))
            answers = [answers] if isinstance(answers, str) else answers
            if not isinstance(answers, list) or not [a for a in answers if isinstance(a, str) and a.strip()]:
                raise ConfigError(f"{path}:{n}: field 'answer' (a string) or 'answers' (a list) is "
                                  "missing or empty")
            answers = [a.strip() for a in answers if isinstance(a, str) and a.strip()]
            doc = str(obj.get("doc") or hashlib.sha256(context.encode()).hexdigest()[:16])
            records.append(Record(id=rid, task="qa", input=question, output=answers[0], answers=answers,
                                  context=context, title=str(obj.get("title") or ""), doc=doc,
                                  source=path.name))
        elif "instruction" in obj:
            instruction, output = _need(path, n, obj, "instruction", "output")
            extra = obj.get("input")
            text = instruction + (f"\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else "")
            records.append(Record(id=rid, task="instruct", input=text, output=output,
                                  doc=str(obj.get("doc") or rid), source=path.name))
        elif "dialogue" in obj:
            dialogue, summary = _need(path, n, obj, "dialogue", "summary")
            records.append(Record(id=rid, task="summarize", input=dialogue, output=summary,
                                  doc=str(obj.get("doc") or rid), source=path.name))
        else:
            raise ConfigError(f"{path}:{n}: expected \"question\"/\"context\"/\"answer\", "
                              "\"instruction\"/\"output\" or \"dialogue\"/\"summary\" fields")
    if not records:
        raise ConfigError(f"{path}: no records (the file is empty)")
    return records


IMPORTERS = {"squad": import_squad, "dialogsum": import_dialogsum, "jsonl": import_jsonl}


def read_records(path: str | Path) -> list[Record]:
    """``records.jsonl`` as ``build_dataset`` writes it (the internal format)."""
    path = Path(path)
    out = []
    for n, obj in read_jsonl(path):
        try:
            out.append(Record(**{k: obj[k] for k in Record.__dataclass_fields__ if k in obj}))
        except TypeError:
            raise ConfigError(f"{path}:{n}: expected a record with id, task, input, output") from None
    return out


def read_examples(path: str | Path) -> list[Example]:
    path = Path(path)
    out = []
    for n, obj in read_jsonl(path):
        try:
            out.append(Example.from_json(obj))
        except TypeError:
            raise ConfigError(f"{path}:{n}: expected a training example (id, task, template, input, "
                              "target, answers); build the data with `ragqa data import`") from None
    return out


# ----------------------------------------------------------------------------- splitting

def _unit(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def split_by_document(records: Sequence[Record], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                      seed: int = 0) -> dict[str, list[Record]]:
    """Deterministic train / validation / test split that keeps every ``doc`` in one split.

    Documents are ordered by a seeded hash and cut where the record counts reach the fractions,
    so the split does not depend on input order; with three or more documents every split with a
    non-zero fraction gets at least one.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"split fractions {list(fractions)} must be three numbers >= 0 summing to 1")
    docs: dict[str, list[Record]] = {}
    for r in records:
        docs.setdefault(r.doc, []).append(r)
    order = sorted(docs, key=lambda d: (_unit(seed, d), d))
    total = len(records)
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    remaining = list(order)
    keep = 1 if fractions[0] > 0 else 0  # train keeps at least one document
    for split, frac in (("test", fractions[2]), ("validation", fractions[1])):
        want = frac * total
        while frac > 0 and len(remaining) > keep:
            doc = remaining[-1]
            if out[split] and len(out[split]) + len(docs[doc]) / 2 > want:
                break
            out[split].extend(docs[remaining.pop()])
    for doc in remaining:
        out["train"].extend(docs[doc])
    return out


# ----------------------------------------------------------------------------- examples

def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class ExampleSettings:
    k: int = 3               # passages per qa example (gold + distractors)
    idk_share: float = 0.15  # share of qa examples without their gold passage (target abstains)
    abstain_text: str = "I don't know."
    seed: int = 0

    def check(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k={self.k}: give 1 or more passages per example")
        if not 0 <= self.idk_share < 1:
            raise ConfigError(f"idk_share={self.idk_share}: give a share in [0, 1)")


def _contains_answer(text: str, answers: Sequence[str]) -> bool:
    t = _norm(text)
    return any(_norm(a) and _norm(a) in t for a in answers)


def make_examples(splits: dict[str, list[Record]], settings: ExampleSettings, index=None,
                  progress=None) -> dict[str, list[Example]]:
    """Records -> examples, per split. qa records get ``k`` passages: their gold passage at a
    random position among distractors (the retriever's hits for the question from ``index`` that
    belong to the same split and do not contain an answer; random passages of the same split when
    there is no index), and with probability ``idk_share`` only distractors and the target
    "I don't know.". No passage of one split is ever put into another split's examples."""
    settings.check()
    rng = random.Random(settings.seed)
    contexts = {s: list(dict.fromkeys(r.context for r in recs if r.task == "qa" and r.context))
                for s, recs in splits.items()}
    haystacks = {s: "\0".join(_norm(c) for c in cs) for s, cs in contexts.items()}
    retrieved: dict[str, list] = {}
    if index is not None:
        qa = [r for recs in splits.values() for r in recs if r.task == "qa"]
        for start in range(0, len(qa), 64):
            part = qa[start:start + 64]
            for r, ret in zip(part, index.retrieve_batch([r.input for r in part], k=settings.k * 4)):
                retrieved[r.id] = ret.hits
            if progress:
                progress(min(start + 64, len(qa)), len(qa))
    out: dict[str, list[Example]] = {}
    for split, recs in splits.items():
        examples = []
        for r in recs:
            if r.task != "qa":
                examples.append(Example(id=r.id, task=r.task, template=TASK_TEMPLATES[r.task],
                                        input=r.input, target=r.output, answers=list(r.answers),
                                        doc=r.doc))
                continue
            distractors: list[dict] = []
            seen = {_norm(r.context)}
            candidates = [{"title": h.title, "text": h.text, "doc_id": h.doc_id}
                          for h in retrieved.get(r.id, [])]
            if index is None or len(candidates) < settings.k:
                pool = [c for c in contexts[split] if c != r.context]
                rng.shuffle(pool)
                candidates += [{"title": "", "text": c, "doc_id": ""} for c in pool[:settings.k * 4]]
            for c in candidates:
                key = _norm(c["text"])
                if (not key or key in seen or _contains_answer(c["text"], r.answers)
                        or key not in haystacks[split] or key in _norm(r.context)):
                    continue
                seen.add(key)
                distractors.append(c)
                if len(distractors) >= settings.k:
                    break
            abstain = rng.random() < settings.idk_share and len(distractors) >= 1
            gold_passage = {"title": r.title, "text": r.context, "doc_id": r.provenance.get("passage_id", r.doc)}
            if abstain:
                passages = distractors[:settings.k]
                examples.append(Example(id=r.id, task="qa", template="qa", input=r.input,
                                        target=settings.abstain_text, answers=[settings.abstain_text],
                                        passages=passages, gold=None, doc=r.doc))
                continue
            passages = distractors[:settings.k - 1]
            pos = rng.randrange(len(passages) + 1)
            passages.insert(pos, gold_passage)
            examples.append(Example(id=r.id, task="qa", template="qa", input=r.input,
                                    target=f"{r.output} [{pos + 1}]", answers=list(r.answers),
                                    passages=passages, gold=pos + 1, doc=r.doc))
        out[split] = examples
    return out


# ----------------------------------------------------------------------------- writing

def build_dataset(records: Sequence[Record], out: str | Path, *, sources: Sequence[Path] = (),
                  fractions: Sequence[float] = (0.8, 0.1, 0.1), settings: ExampleSettings | None = None,
                  index=None, index_dir: str | None = None, extra: dict | None = None,
                  progress=None) -> dict:
    """Split ``records`` by document, make examples and write ``out``: records.jsonl,
    train/validation/test.jsonl and manifest.json (written last: a directory without a manifest
    is an unfinished build). Returns the manifest."""
    settings = settings or ExampleSettings()
    if not records:
        raise ConfigError("no records to build training data from")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"record id {dup!r} appears twice; ids must be unique")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    splits = split_by_document(records, fractions, settings.seed)
    examples = make_examples(splits, settings, index=index, progress=progress)
    write_jsonl_atomic(out / "records.jsonl", (r.to_json() for r in records))
    for split in SPLITS:
        write_jsonl_atomic(out / f"{split}.jsonl", (e.to_json() for e in examples[split]))
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": settings.seed,
        "fractions": dict(zip(SPLITS, fractions)),
        "example_settings": asdict(settings),
        "index": index_dir,
        "tasks": sorted({r.task for r in records}),
        "counts": {split: {"records": len(splits[split]), "examples": len(examples[split]),
                           "documents": len({r.doc for r in splits[split]}),
                           "abstain_examples": sum(1 for e in examples[split]
                                                   if e.task == "qa" and e.gold is None)}
                   for split in SPLITS},
        "sources": {str(p): file_sha256(p) for p in sources if Path(p).is_file()},
        "files": {f: file_sha256(out / f) for f in ["records.jsonl"] + [f"{s}.jsonl" for s in SPLITS]},
        **(extra or {}),
    }
    write_json_atomic(out / MANIFEST, manifest, indent=2, sort_keys=False)
    return manifest


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise InputNotFound(f"{data_dir}: no {MANIFEST}; build training data with `ragqa data import` "
                            "or `ragqa data synthesize` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ConfigError(f"{path}: {describe_json_error(exc)}; build the data again with `ragqa data import`") from None
