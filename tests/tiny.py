"""Tiny random causal LMs built inside the tests (no downloads): a Llama of hidden size 32 with a
word-level tokenizer over the words of the given texts and a small chat template."""

from __future__ import annotations

import re
from pathlib import Path

SPECIALS = ["<pad>", "<eos>", "<unk>", "<bos>"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")


def words_of(texts) -> list[str]:
    seen: dict[str, None] = {}
    for t in texts:
        for w in t.split():
            seen.setdefault(w, None)
    return list(seen)


def make_tiny_lm(directory: Path, texts=(), seed: int = 0, hidden: int = 32,
                 max_positions: int = 512) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from ragqa.answering.prompting import list_templates, load_template

    # the vocabulary: every word of the texts and of ragqa's templates, plus digits and citations
    template_words = []
    for name in list_templates():
        t = load_template(name)
        template_words += [t.system, t.question, t.answer_cue, t.context_header, t.abstain_text,
                           t.input, t.no_context, *t.alternates]
    extra = ["system", "user", "assistant", ":"] + [f"[{i}]" for i in range(1, 10)]
    vocab = SPECIALS + [w for w in words_of(list(texts) + template_words + extra) if w not in SPECIALS]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>",
                                        unk_token="<unk>", bos_token="<bos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(vocab),
                         max_position_embeddings=max_positions, eos_token_id=1, pad_token_id=0,
                         bos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def squad_json(n_articles: int = 4, paragraphs: int = 2, questions: int = 2) -> dict:
    """A small SQuAD-format dataset: article a, paragraph p says 'The capital of land A P is
    city A P .' and asks about it."""
    data = []
    for a in range(n_articles):
        paras = []
        for p in range(paragraphs):
            city = f"city{a}x{p}"
            context = (f"Land{a}x{p} is a quiet country . The capital of land{a}x{p} is {city} . "
                       f"It has {a + p + 2} rivers and many hills .")
            qas = []
            for q in range(questions):
                question = (f"What is the capital of land{a}x{p} ?" if q % 2 == 0
                            else f"How many rivers does land{a}x{p} have ?")
                answer = city if q % 2 == 0 else str(a + p + 2)
                qas.append({"id": f"q{a}-{p}-{q}", "question": question,
                            "answers": [{"text": answer, "answer_start": context.index(answer)}]})
            paras.append({"context": context, "qas": qas})
        data.append({"title": f"Article_{a}", "paragraphs": paras})
    return {"version": "1.1", "data": data}


def texts_of(squad: dict) -> list[str]:
    out = []
    for art in squad["data"]:
        out.append(art["title"].replace("_", " "))
        for p in art["paragraphs"]:
            out.append(p["context"])
            out += [q["question"] for q in p["qas"]] + [a["text"] for q in p["qas"] for a in q["answers"]]
    return [re.sub(r"\s+", " ", t) for t in out]
