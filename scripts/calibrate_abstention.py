"""Calibrate the "I don't know" gate on SQuAD dev data: relevance = best dense cosine similarity
+ w x term coverage of the hits (ragqa.indexing.bm25.BM25Index.coverage), abstain below a threshold.

Articles of ../shared/data/squad-v1.1 are split in two halves by index: the EVEN articles are
indexed. Calibration uses questions from articles 0-15 (answerable: indexed even articles;
off-topic: the odd articles, not indexed); the report uses articles 16-31, which calibration never
saw. For each weight w in 0, 0.1, ..., 1 the threshold is the largest (2 decimals) that keeps
wrongly abstained answerable questions <= 10% on the calibration half; the weight that abstains
on most off-topic calibration questions wins (ties: the smaller weight). The script prints both
rates on both halves for the chosen pair and for similarity alone (w = 0), and writes JSON.

    python scripts/calibrate_abstention.py [--out bench-results/abstention.json] [--answer N]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT.parent / "shared/data/squad-v1.1/dev-v1.1.part-a.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-results/abstention.json")
    ap.add_argument("--index", default="/tmp/ragqa-calib-index")
    ap.add_argument("--max-questions", type=int, default=20, help="per article")
    ap.add_argument("--answer", type=int, default=0, help="also run the whole pipeline (retrieval gate + "
                    "the generator's own 'I don't know') on N answerable and N off-topic report questions")
    ap.add_argument("--model", default="", help="generator for --answer (default: the configured model)")
    ap.add_argument("--variant", default="base", help="variant for --answer")
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
        def features(items):
            res = idx.retrieve_batch([q for q, _ in items], k=settings.top_k, coverage=True)
            return (np.array([r.top_similarity for r in res]), np.array([r.coverage for r in res]),
                    np.array([a for _, a in items]))

        cal = features(questions("calibration"))
        rep = features(questions("report"))

    def threshold_for(w):
        sim, cov, a = cal
        # largest threshold with <= 10% of answerable calibration questions below it
        return float(np.floor(np.quantile((sim + w * cov)[a], 0.10) * 100) / 100)

    def rates(data, w, threshold):
        sim, cov, a = data
        below = sim + w * cov < threshold
        return {"weight": w, "threshold": threshold, "answerable": int(a.sum()), "off_topic": int((~a).sum()),
                "wrongly_abstained": float(below[a].mean()), "off_topic_abstained": float(below[~a].mean())}

    grid = [round(0.1 * i, 1) for i in range(11)]
    tried = [rates(cal, w, threshold_for(w)) for w in grid]
    best = max(tried, key=lambda r: (r["off_topic_abstained"], -r["weight"]))
    weight, threshold = best["weight"], best["threshold"]
    result = {"similarity alone, calibration (articles 0-15)": tried[0],
              "similarity alone, report (articles 16-31, unseen)": rates(rep, 0.0, tried[0]["threshold"]),
              "calibration (articles 0-15)": best,
              "report (articles 16-31, unseen)": rates(rep, weight, threshold),
              "weights tried (calibration)": tried}
    if args.answer:
        import random

        from ragqa.answering.pipeline import RagQA

        report = questions("report")
        rng = random.Random(0)
        sample = (rng.sample([x for x in report if x[1]], args.answer)
                  + rng.sample([x for x in report if not x[1]], args.answer))
        tuned = settings.replace(abstain_threshold=threshold, abstain_coverage_weight=weight)
        if args.model:
            tuned = tuned.replace(model=args.model)
        with RagQA.open(work / "idx", tuned) as qa:
            answers = [qa.ask(q, variant=args.variant) for q, _ in tqdm(sample, desc="whole pipeline")]
        abstained = np.array([x.abstained for x in answers])
        a = np.array([x[1] for x in sample])
        result["report, whole pipeline (gate + model)"] = {
            "weight": weight, "threshold": threshold, "model": tuned.model, "variant": args.variant,
            "answerable": int(a.sum()), "off_topic": int((~a).sum()),
            "wrongly_abstained": float(abstained[a].mean()), "off_topic_abstained": float(abstained[~a].mean()),
            "answers": [{"question": q, "answerable": bool(ok), "answer": x.text, "abstained": x.abstained,
                         "reason": x.reason} for (q, ok), x in zip(sample, answers)]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| questions | weight | threshold | answerable wrongly abstained | off-topic abstained |\n"
          "|---|---|---|---|---|")
    for name, r in result.items():
        if isinstance(r, dict):
            print(f"| {name}: {r['answerable']} answerable, {r['off_topic']} off-topic | {r['weight']:g} | "
                  f"{r['threshold']:.2f} | {100 * r['wrongly_abstained']:.1f}% | {100 * r['off_topic_abstained']:.1f}% |")
    print(f"chosen: abstain_coverage_weight = {weight:g}, abstain_threshold = {threshold:.2f}")

if __name__ == "__main__":
    main()
