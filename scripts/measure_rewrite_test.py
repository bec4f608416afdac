"""How well ``needs_rewrite`` (the cheap test that decides whether a follow-up is rewritten before
retrieval) tells follow-ups from questions that stand alone:

- data/dev/conversations.jsonl: 40 follow-ups and 20 standalone questions, each after a turn of
  conversation about the demo documents (written for this measurement; development data);
- the standalone SQuAD questions of the development split (build/tune/squad-dev.json, from
  `python scripts/squad_splits.py build/tune`): every one stands alone, so each one flagged is a
  rewrite that costs a generation for nothing.

    .venv/bin/python scripts/measure_rewrite_test.py [--squad build/tune/squad-dev.json]

Writes bench-results/rewrite-test.json and prints a table; no model runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ragqa.answering.pipeline import needs_rewrite  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=Path, default=ROOT / "data" / "dev" / "conversations.jsonl")
    ap.add_argument("--squad", type=Path, default=ROOT / "build" / "tune" / "squad-dev.json")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "rewrite-test.json")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.conversations.read_text().splitlines() if line.strip()]
    follow = [r for r in rows if r["follow_up"]]
    alone = [r for r in rows if not r["follow_up"]]
    caught = [r["question"] for r in follow if needs_rewrite(r["question"])]
    missed = [r["question"] for r in follow if not needs_rewrite(r["question"])]
    wasted = [r["question"] for r in alone if needs_rewrite(r["question"])]
    squad = [qa["question"] for art in json.loads(args.squad.read_text())["data"] for p in art["paragraphs"]
             for qa in p["qas"]] if args.squad.is_file() else []
    squad_flagged = [q for q in squad if needs_rewrite(q)]
    result = {"follow_ups": len(follow), "follow_ups_caught": len(caught), "missed": missed,
              "standalone": len(alone), "standalone_flagged": len(wasted), "standalone_flagged_questions": wasted,
              "squad_dev_questions": len(squad), "squad_dev_flagged": len(squad_flagged),
              "squad_dev_flagged_examples": squad_flagged[:20]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| set | questions | flagged for a rewrite |\n|---|---|---|")
    print(f"| follow-ups (data/dev/conversations.jsonl) | {len(follow)} | {len(caught)} ({100 * len(caught) / len(follow):.0f}%) |")
    print(f"| standalone, after a turn (same file) | {len(alone)} | {len(wasted)} ({100 * len(wasted) / len(alone):.0f}%) |")
    if squad:
        print(f"| SQuAD development questions (all stand alone) | {len(squad)} | {len(squad_flagged)} "
              f"({100 * len(squad_flagged) / len(squad):.1f}%) |")
    print("missed follow-ups:", missed)
    print("standalone flagged:", wasted)
    print("SQuAD flagged, first ones:", squad_flagged[:8])
    return 0


if __name__ == "__main__":
    sys.exit(main())
