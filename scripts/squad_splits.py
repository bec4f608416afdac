"""Split ../shared/data/squad-v1.1/dev-v1.1.part-a.json by article into a development half
(articles 0-15: choose templates and settings on it) and a report half (articles 16-31: only
measured). Writes OUT/squad-dev.json and OUT/squad-report.json in SQuAD format.

    python scripts/squad_splits.py OUT_DIR
"""

import json
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent.parent / "shared/data/squad-v1.1/dev-v1.1.part-a.json"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "squad-splits")
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(SRC.read_text(encoding="utf-8"))["data"]
    for name, articles in (("dev", data[:16]), ("report", data[16:])):
        (out / f"squad-{name}.json").write_text(json.dumps({"version": "1.1", "data": articles}))
        print(out / f"squad-{name}.json", len(articles), "articles")


if __name__ == "__main__":
    main()
