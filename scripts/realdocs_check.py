"""Answers on real documents nobody here wrote: the Debian documentation installed on this machine
(man pages rendered to text, HTML pages, two PDFs, READMEs) and the questions written for it in
data/realdocs/questions.jsonl (each answerable one with the strings a right answer contains; two
off-topic ones that should get "I don't know"). It is a development check: SQuAD alone says
little about option letters, yes/no questions or man-page layout.

    python scripts/realdocs_check.py [WORK_DIR] [--out bench-results/realdocs.json] [-- ASK_OPTIONS]

Copies the documents into WORK_DIR/docs (a document missing here is named, and its questions are
left out), indexes them, asks every question in one `ragqa ask --questions` run (the default
settings; ASK_OPTIONS are passed on, e.g. `--model qwen2.5-coder-0.5b-instruct`), and writes the
JSON and a Markdown table beside it: each answer, right or not, its sources and timings.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "data" / "realdocs" / "questions.jsonl"
DOC = Path("/usr/share/doc")

# name in the corpus -> where it comes from on a Debian machine
SOURCES = {
    "ls.1.txt": ("man", "ls"),
    "grep.1.txt": ("man", "grep"),
    "tar.1.txt": ("man", "tar"),
    "users-and-groups.html": ("file", DOC / "base-passwd/users-and-groups.html"),
    "libffi/": ("dir", DOC / "libffi8/html"),
    "shared-mime-info-spec.pdf": ("file", DOC / "shared-mime-info/shared-mime-info-spec.pdf"),
    "libtasn1.pdf": ("file", DOC / "libtasn1-doc/libtasn1.pdf"),
    "bash-README.txt": ("file", DOC / "bash/README.gz"),
    "bc-README.txt": ("file", DOC / "bc/README"),
    "fontconfig-user.txt": ("file", DOC / "fontconfig/fontconfig-user.txt.gz"),
    "FHS-README.txt": ("file", DOC / "base-files/README.FHS"),
}


def collect(docs: Path) -> list[str]:
    """Copies what this machine has into ``docs``; returns the names it lacks."""
    missing = []
    docs.mkdir(parents=True, exist_ok=True)
    for name, (kind, src) in SOURCES.items():
        dest = docs / name
        try:
            if kind == "man":
                text = subprocess.run(["man", src], capture_output=True, text=True, check=True,
                                      env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": ""}).stdout
                text = re.sub(r".\x08", "", text)  # overstrike (bold, underline), as `col -b` drops it
                if not text.strip():
                    raise OSError("empty")
                dest.write_text(text, encoding="utf-8")
            elif kind == "dir":
                if not src.is_dir():
                    raise OSError("no folder")
                dest.mkdir(exist_ok=True)
                for f in sorted(src.glob("*.html")):
                    shutil.copyfile(f, dest / f.name)
            elif src.suffix == ".gz":
                dest.write_bytes(gzip.decompress(src.read_bytes()))
            else:
                shutil.copyfile(src, dest)
        except (OSError, subprocess.CalledProcessError):
            missing.append(name)
    return missing


def is_right(answer: str, abstained: bool, q: dict) -> bool:
    """Right when the answer contains an accepted string (all of them with ``"all": true``):
    options such as ``-S`` as written (case and all, not inside ``--size``), yes / no / not as
    words, anything else in any case. An off-topic question is right when abstained."""
    if not q.get("answerable", True):
        return abstained or "don't know" in answer.lower()
    if abstained:
        return False

    def has(s: str) -> bool:
        if s.startswith("-") and len(s) <= 3:
            return re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", answer) is not None
        if s.lower() in ("yes", "no", "not"):
            return re.search(rf"\b{s}\b", answer, flags=re.I) is not None
        return s.lower() in answer.lower()

    hits = [has(s) for s in q["accept"]]
    return all(hits) if q.get("all") else any(hits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", nargs="?", default="build/realdocs", type=Path)
    ap.add_argument("--out", default=ROOT / "bench-results" / "realdocs.json", type=Path)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    ask_options = argv[cut + 1:]  # after --: options for `ragqa ask`
    docs, index = args.work / "docs", args.work / "index"
    shutil.rmtree(args.work, ignore_errors=True)
    missing = collect(docs)
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = [q for q in questions if q.get("source") not in missing]
    asked = args.work / "questions.jsonl"
    asked.write_text("".join(json.dumps({"id": q["id"], "question": q["question"]}) + "\n" for q in questions))
    ragqa = [sys.executable, "-m", "ragqa"]
    subprocess.run(ragqa + ["index", "build", str(docs), "--index", str(index)], check=True)
    done = subprocess.run(ragqa + ["ask", "--questions", str(asked), "--index", str(index), "--json", *ask_options],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"ragqa ask failed: {done.stderr.strip()[-2000:]}")
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    rows = []
    for q in questions:
        a = answers[q["id"]]
        t = a.get("timings") or {}
        rows.append({"id": q["id"], "question": q["question"], "answer": a["answer"],
                     "right": is_right(a["answer"], bool(a.get("abstained")), q),
                     "answerable": q.get("answerable", True),
                     "sources": [s["doc_id"] for s in a.get("sources", [])],
                     "prompt_tokens": t.get("prompt_tokens"),
                     "seconds": round((t.get("retrieve_ms", 0) + t.get("generate_ms", 0)) / 1000, 2)})
    right = sum(r["right"] for r in rows)
    answerable = [r for r in rows if r["answerable"]]
    times = [r["seconds"] for r in rows if r["prompt_tokens"]]
    tokens = [r["prompt_tokens"] for r in rows if r["prompt_tokens"]]
    from ragqa.benchmarks.bench import cpu_flags, machine_info
    from ragqa.config import Settings

    threads = Settings().threads  # what the `ragqa ask` run read (RAGQA_THREADS, ragqa.toml)
    result = {"right": right, "questions": len(rows),
              "answerable_right": sum(r["right"] for r in answerable), "answerable": len(answerable),
              "seconds_p50": round(statistics.median(times), 2) if times else None,
              "prompt_tokens_mean": round(statistics.mean(tokens)) if tokens else None,
              "missing_documents": missing, "ask_options": ask_options,
              "machine": {**machine_info(threads), "cpu_flags": cpu_flags()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    lines = [f"Real documents: {right} of {len(rows)} right ({result['answerable_right']} of "
             f"{len(answerable)} answerable, {len(rows) - len(answerable)} off-topic); "
             f"{result['seconds_p50']} s per answer p50, {result['prompt_tokens_mean']} prompt tokens "
             "on average", "", "| question | answer | right |", "|---|---|---|"]
    for r in rows:
        answer = r["answer"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['question']} | {answer[:90]} | {'yes' if r['right'] else '**no**'} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(lines[0])
    if missing:
        print("not on this machine (their questions left out):", ", ".join(missing))


if __name__ == "__main__":
    main()
