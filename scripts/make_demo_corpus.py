"""Rebuild data/demo from the SQuAD v1.1 dev file in ../shared/data (CC BY-SA 4.0, Wikipedia text).

Five articles, one file each, in the formats ragqa reads: Markdown, HTML, plain text, PDF and
JSONL. Run: python scripts/make_demo_corpus.py [SQUAD_JSON]  (needs fpdf2 for the PDF).
"""

import html
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/squad-v1.1/dev-v1.1.part-a.json"
OUT = ROOT / "data" / "demo"
ARTICLES = {"Apollo_program": "md", "Oxygen": "html", "Amazon_rainforest": "txt",
            "Black_Death": "pdf", "Steam_engine": "jsonl"}


def main() -> None:
    data = {a["title"]: [p["context"] for p in a["paragraphs"]] for a in json.loads(SRC.read_text())["data"]}
    OUT.mkdir(parents=True, exist_ok=True)
    for title, kind in ARTICLES.items():
        paras, name = data[title], title.replace("_", " ")
        path = OUT / f"{title.lower()}.{kind}"
        if kind == "md":
            path.write_text(f"# {name}\n\n" + "\n\n".join(paras) + "\n", encoding="utf-8")
        elif kind == "txt":
            path.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
        elif kind == "html":
            body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paras)
            path.write_text(f"<!doctype html>\n<html><head><title>{name}</title></head>\n"
                            f"<body><h1>{name}</h1>\n{body}\n</body></html>\n", encoding="utf-8")
        elif kind == "jsonl":
            with path.open("w", encoding="utf-8") as fh:
                for i, p in enumerate(paras):
                    fh.write(json.dumps({"_id": f"{title}#{i}", "title": name, "text": p}, ensure_ascii=False) + "\n")
        elif kind == "pdf":
            from fpdf import FPDF

            pdf = FPDF()
            pdf.set_title(name)
            pdf.set_font("helvetica", size=11)
            for i in range(0, len(paras), 6):
                pdf.add_page()
                for p in paras[i:i + 6]:
                    # the core PDF fonts are latin-1 only
                    pdf.multi_cell(0, 5, p.encode("latin-1", "replace").decode("latin-1"))
                    pdf.ln(3)
            pdf.output(str(path))
        print(path.relative_to(ROOT), len(paras), "paragraphs")


if __name__ == "__main__":
    main()
