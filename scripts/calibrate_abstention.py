"""Calibrate the "I don't know" threshold (best dense cosine similarity) on SQuAD dev data.

Articles of ../shared/data/squad-v1.1 are split in two halves by index: the EVEN articles are
indexed. Calibration uses questions from articles 0-15 (answerable: indexed even articles;
off-topic: the odd articles, not indexed); the report uses articles 16-31, which calibration never
saw. The threshold is the largest value that keeps wrongly abstained answerable questions <= 10%
on the calibration half; the script prints both rates on both halves and writes JSON.

    python scripts/calibrate_abstention.py [--out bench-results/abstention.json]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT.parent / "shared/data/squad-v1.1/dev-v1.1.part-a.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-results/abstention.json")
    ap.add_argument("--index", default="/tmp/ragqa-calib-index")
    ap.add_argument("--max-questions", type=int, default=20, help="per article")
    ap.add_argument("--answer", type=int, default=0, help="also run the whole pipeline (retrieval gate + "
                    "the generator's own 'I don't know') on N answerable and N off-topic report questions")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from ragqa import Index, Settings

    articles = json.loads(SQUAD.read_text())["data"]
    work = Path(args.index)
    work.mkdir(parents=True, exist_ok=True)
    indexed = [a for i, a in enumerate(articles) if i % 2 == 0]
    squad_subset = work / "indexed.json"
    squad_subset.write_text(json.dumps({"version": "1.1", "data": indexed}))
    settings = Settings.load()
    Index.build([squad_subset], work / "idx", settings)

    def questions(part):
        out = []
        for i, a in enumerate(articles):
            if (i < 16) != (part == "calibration"):
                continue
            qs = [qa["question"] for p in a["paragraphs"] for qa in p["qas"]][: args.max_questions]
            out += [(q, i % 2 == 0) for q in qs]
        return out

    with Index.open(work / "idx", settings) as idx:
        def sims(items):
            res = idx.retrieve_batch([q for q, _ in items], k=1, mode="dense")
            return np.array([r.top_similarity for r in res]), np.array([a for _, a in items])

        cal_s, cal_a = sims(questions("calibration"))
        rep_s, rep_a = sims(questions("report"))
    # largest threshold with <= 10% of answerable calibration questions below it
    threshold = float(np.floor(np.quantile(cal_s[cal_a], 0.10) * 100) / 100)

    def rates(s, a):
        return {"threshold": threshold, "answerable": int(a.sum()), "off_topic": int((~a).sum()),
                "wrongly_abstained": float((s[a] < threshold).mean()),
                "off_topic_abstained": float((s[~a] < threshold).mean())}

    result = {"calibration (articles 0-15)": rates(cal_s, cal_a), "report (articles 16-31, unseen)": rates(rep_s, rep_a)}
    if args.answer:
        import random

        from ragqa.pipeline import RagQA

        report = questions("report")
        rng = random.Random(0)
        sample = (rng.sample([x for x in report if x[1]], args.answer)
                  + rng.sample([x for x in report if not x[1]], args.answer))
        with RagQA.open(work / "idx", settings.replace(abstain_threshold=threshold)) as qa:
            abstained = np.array([qa.ask(q).abstained for q, _ in sample])
        a = np.array([x[1] for x in sample])
        result["report, whole pipeline (gate + model)"] = {
            "threshold": threshold, "answerable": int(a.sum()), "off_topic": int((~a).sum()),
            "wrongly_abstained": float(abstained[a].mean()), "off_topic_abstained": float(abstained[~a].mean())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"| questions | threshold | answerable wrongly abstained | off-topic abstained |\n|---|---|---|---|")
    for name, r in result.items():
        print(f"| {name}: {r['answerable']} answerable, {r['off_topic']} off-topic | {r['threshold']:.2f} | "
              f"{100 * r['wrongly_abstained']:.1f}% | {100 * r['off_topic_abstained']:.1f}% |")


if __name__ == "__main__":
    main()
