"""Benchmarks. Each prints a table and writes JSON with machine information; none is a test.

``bench_index``: in one run, on the same documents,
  1. ragqa's full build (empty embedding cache),
  2. a plain LangChain pipeline: RecursiveCharacterTextSplitter -> FAISS.from_documents with the
     same sentence-transformers model,
  3. raw ``SentenceTransformer.encode`` of ragqa's chunks (the floor for any pipeline on torch),
  4. an unchanged rebuild and a rebuild with 1% of the documents changed,
  5. query latency (embed + search) of ``Index.search`` vs raw encode + FAISS search.

``bench_generate``: on one generator model, ``Generator.generate`` vs a plain
``AutoModelForCausalLM.generate`` on the same RAG prompt (tokens/s, first token), then variant
switching (switch_ms, no base reload, resident memory per variant).

``bench_all``: every stage in one go on a small sample (``--quick``) or the full sizes: index
build and unchanged rebuild, query latency per retrieval mode, generation tokens/s and first
token, variant switching, and training throughput (``ragqa.training.throughput``, when present).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragqa.config import Settings
from ragqa.memory import rss_mb as _rss_mb
from ragqa.memory import settle as _settle_memory
from ragqa import resources
from ragqa.files import read_jsonl, write_atomic, write_jsonl_atomic


def _dtype(setting: str) -> str:
    """The generator dtype a setting resolves to on this machine (``auto`` shows what it chose)."""
    from ragqa.generators.models import resolve_dtype

    resolved = resolve_dtype(setting)
    return resolved if resolved == setting else f"{resolved} ({setting})"


# Environment variables that hold the libraries below the CPU's instruction sets (set by
# scripts/avx2_proxy.py to measure the AVX2 code on a bigger CPU); a result records those set.
# (and qgemv.MARCH_ENV, the C kernel's target)
ISA_LIMIT_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
                 "FBGEMM_ENABLE_INSTRUCTIONS")


def isa_limits() -> dict:
    from ragqa.generators.qgemv import MARCH_ENV

    return {k: os.environ[k] for k in (*ISA_LIMIT_ENV, MARCH_ENV) if os.environ.get(k)}


def machine_info(threads: int) -> dict:
    import faiss
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "faiss": faiss.__version__, "onnxruntime": ort,
            "load_avg_at_start": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "isa_limits": isa_limits()}


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _write_jsonl(path: Path, docs: list[dict]) -> None:
    write_jsonl_atomic(path, docs)


def bench_index(corpus: Path, queries: Path | None, limit: int, settings: Settings, out: Path,
                n_queries: int = 100, skip_langchain: bool = False, echo: Callable[[str], None] = print) -> dict:
    from ragqa.indexing.index import Index

    rows = [o for _, o in read_jsonl(corpus, "corpus")][:limit]
    work = Path(tempfile.mkdtemp(prefix="ragqa-bench-"))
    results: dict = {"corpus": str(corpus), "documents": len(rows), "machine": machine_info(settings.threads),
                     "settings": {"embedder": settings.embedder, "embed_backend": settings.embed_backend,
                                  "threads": settings.threads, "index_type": settings.index_type}}
    try:
        data = work / "corpus.jsonl"
        _write_jsonl(data, rows)
        s = settings.replace(cache_dir=work / "cache")  # an empty embedding cache: a true full build
        # the one-time ONNX export (cached on disk) and model loading are not part of a build,
        # as the raw-encode baseline's model load is not part of its time
        from ragqa.indexing.embedding import get_embedder

        get_embedder(s).encode(["warm up"])

        echo(f"ragqa full build of {len(rows)} documents ...")
        t_full, report = _timed(lambda: Index.build([data], work / "idx", s))
        results["ragqa_build_s"] = t_full
        results["chunks"] = report.chunks

        t_same, _ = _timed(lambda: Index.build([data], work / "idx", s))
        results["unchanged_rebuild_s"] = t_same

        changed = [dict(r) for r in rows]
        step = max(1, len(rows) // max(1, len(rows) // 100))
        n_changed = 0
        for r in changed[::step]:
            r["text"] = r["text"] + " (revised)"
            n_changed += 1
        _write_jsonl(data, changed)
        t_one, rep1 = _timed(lambda: Index.build([data], work / "idx", s))
        results["changed_1pct_rebuild_s"] = t_one
        results["changed_documents"] = n_changed

        # the chunks ragqa embedded, for the raw-encode floor
        with Index.open(work / "idx", s) as idx:
            texts = [t for _, t in idx.chunks.embed_texts()]
            embedder = idx.embedder
            from sentence_transformers import SentenceTransformer
            import torch

            torch.set_num_threads(settings.threads)
            st = SentenceTransformer(embedder.path, device="cpu")
            echo(f"raw SentenceTransformer.encode of {len(texts)} chunks ...")
            t_raw, _ = _timed(lambda: st.encode(texts, batch_size=32, normalize_embeddings=True,
                                                 show_progress_bar=False))
            results["raw_encode_s"] = t_raw

            if not skip_langchain:
                echo("LangChain RecursiveCharacterTextSplitter -> FAISS.from_documents ...")
                t_lc, n_lc = _timed(lambda: _langchain_pipeline(rows, st))
                results["langchain_s"] = t_lc
                results["langchain_chunks"] = n_lc

            qtexts = [o["text"] for _, o in itertools.islice(read_jsonl(queries, "queries file"), n_queries)] \
                if queries else [r["title"] or r["text"][:100] for r in rows[:n_queries]]
            for q in qtexts[:5]:  # warm up both paths
                idx.search(q, k=10, mode="dense")
            ragqa_ms = [1000 * _timed(lambda q=q: idx.search(q, k=10, mode="dense"))[0] for q in qtexts]
            raw_index = idx.vectors.faiss_index

            def raw_query(q: str) -> None:
                v = st.encode([q], normalize_embeddings=True, show_progress_bar=False)
                raw_index.search(np.asarray(v, dtype=np.float32), 10)

            for q in qtexts[:5]:
                raw_query(q)
            raw_ms = [1000 * _timed(lambda q=q: raw_query(q))[0] for q in qtexts]
            hybrid_ms = [1000 * _timed(lambda q=q: idx.search(q, k=10, mode="hybrid"))[0] for q in qtexts]
        results["query"] = {
            "n": len(qtexts),
            "ragqa_dense_p50_ms": statistics.median(ragqa_ms), "ragqa_dense_p95_ms": _p95(ragqa_ms),
            "raw_p50_ms": statistics.median(raw_ms), "raw_p95_ms": _p95(raw_ms),
            "ragqa_hybrid_p50_ms": statistics.median(hybrid_ms), "ragqa_hybrid_p95_ms": _p95(hybrid_ms)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _ratios(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(results, indent=1) + "\n")
    echo(format_index_table(results))
    echo(f"wrote {out}")
    return results


def _p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def _ratios(r: dict) -> None:
    full = r["ragqa_build_s"]
    r["speedup_vs_langchain"] = r["langchain_s"] / full if "langchain_s" in r else None
    r["speed_vs_raw_encode"] = r["raw_encode_s"] / full
    r["unchanged_share"] = r["unchanged_rebuild_s"] / full
    r["changed_1pct_share"] = r["changed_1pct_rebuild_s"] / full
    q = r["query"]
    q["p50_vs_raw"] = q["ragqa_dense_p50_ms"] / q["raw_p50_ms"]
    q["p95_vs_raw"] = q["ragqa_dense_p95_ms"] / q["raw_p95_ms"]


def format_index_table(r: dict) -> str:
    q = r["query"]
    lines = [f"corpus: {r['documents']} documents -> {r['chunks']} chunks; backend {r['settings']['embed_backend']}, "
             f"{r['settings']['threads']} thread(s); {r['machine']['cpu']}",
             f"| measurement | seconds / ms | ratio | goal |", "|---|---|---|---|",
             f"| ragqa full build | {r['ragqa_build_s']:.1f} s | 1.00 | |"]
    if r.get("langchain_s") is not None:
        lines.append(f"| LangChain splitter + FAISS.from_documents | {r['langchain_s']:.1f} s | "
                     f"ragqa {r['speedup_vs_langchain']:.2f}x faster | >= 1.5x |")
    lines += [f"| raw SentenceTransformer.encode of the same chunks | {r['raw_encode_s']:.1f} s | "
              f"ragqa at {r['speed_vs_raw_encode']:.2f}x its speed | >= 0.9x |",
              f"| unchanged rebuild | {r['unchanged_rebuild_s']:.2f} s | {100 * r['unchanged_share']:.1f}% of full | <= 5% |",
              f"| rebuild with 1% of documents changed ({r['changed_documents']}) | {r['changed_1pct_rebuild_s']:.2f} s | "
              f"{100 * r['changed_1pct_share']:.1f}% of full | <= 15% |",
              f"| query p50, ragqa dense (embed + search) | {q['ragqa_dense_p50_ms']:.1f} ms | {q['p50_vs_raw']:.2f}x raw | <= 1.2x |",
              f"| query p95, ragqa dense | {q['ragqa_dense_p95_ms']:.1f} ms | {q['p95_vs_raw']:.2f}x raw | <= 1.2x |",
              f"| query p50 / p95, raw encode + faiss search | {q['raw_p50_ms']:.1f} / {q['raw_p95_ms']:.1f} ms | | |",
              f"| query p50 / p95, ragqa hybrid (dense + BM25 + RRF) | {q['ragqa_hybrid_p50_ms']:.1f} / "
              f"{q['ragqa_hybrid_p95_ms']:.1f} ms | | |"]
    return "\n".join(lines)


def _langchain_pipeline(rows: list[dict], model) -> int:
    """The plain LangChain way, with the same sentence-transformers model (as
    HuggingFaceEmbeddings would call it). Returns the number of chunks."""
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document as LCDocument
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    class STEmbeddings(Embeddings):
        def embed_documents(self, texts):
            return model.encode(texts, normalize_embeddings=True, show_progress_bar=False).tolist()

        def embed_query(self, text):
            return self.embed_documents([text])[0]

    docs = [LCDocument(page_content=f"{r.get('title', '')}\n{r['text']}", metadata={"id": r["_id"]}) for r in rows]
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100).split_documents(docs)
    FAISS.from_documents(chunks, STEmbeddings())
    return len(chunks)


# ---------------------------------------------------------------------------------- generation

GEN_QUESTION = "What did the Apollo program achieve, and which setbacks did it face?"
GEN_PROMPT_BUDGET = 490  # max_prompt_tokens: 3 passages (the 3rd cut to fit, as ragqa does), ~490 tokens
SWITCH_ROUNDS = 5  # recorded rounds of base -> lora-a -> lora-b -> soft-prompt (after one warm-up round)
SWITCH_VARIANTS = ("lora-a", "lora-b", "soft-prompt")


def _demo_passages(n: int = 3) -> list:
    from ragqa.answering.prompting import Passage

    doc = resources.demo_corpus() / "apollo_program.md"
    paragraphs = [p.strip() for p in doc.read_text(encoding="utf-8").split("\n\n")
                  if p.strip() and not p.strip().startswith("#")]
    return [Passage(text=t, title="Apollo program", doc_id=doc.name) for t in paragraphs[:n]]


def _base_weight_ptrs(model) -> dict[str, int]:
    """data_ptr of the input embedding and of the first q_proj weight (its base layer once a
    LoRA wraps it): unchanged pointers mean the base weights were never reloaded or copied."""
    ptrs = {"embed_tokens": model.get_input_embeddings().weight.data_ptr()}
    for name, module in model.named_modules():
        if name.endswith("q_proj"):
            ptrs[name.replace(".base_layer", "")] = getattr(module, "base_layer", module).weight.data_ptr()
            break
    return ptrs


def _make_bench_adapters(model, work: Path, base_model: str, fingerprint: str) -> dict[str, Path]:
    """Two random LoRA adapters (r=8 on q_proj/v_proj; init_lora_weights=False so they change
    the outputs) and one random 20-token prompt-tuning adapter, each with its card. ``model``
    (a plain transformers model, not the Generator's) gets its LoRA layers removed again."""
    import warnings

    import torch
    from peft import (LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType,
                      get_peft_model)

    from ragqa.generators.registry import Card

    dirs: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed, name in enumerate(("lora-a", "lora-b")):
            torch.manual_seed(seed)
            peft_model = get_peft_model(model, LoraConfig(
                r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                task_type=TaskType.CAUSAL_LM))
            peft_model.save_pretrained(work / name)
            model = peft_model.unload()  # the plain model back, for the next adapter
            dirs[name] = work / name
        torch.manual_seed(2)
        peft_model = get_peft_model(model, PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=20,
            prompt_tuning_init=PromptTuningInit.RANDOM))
        peft_model.save_pretrained(work / "soft-prompt")
        dirs["soft-prompt"] = work / "soft-prompt"
        del peft_model
    kinds = {"lora-a": "lora", "lora-b": "lora", "soft-prompt": "prompt-tuning"}
    for name, directory in dirs.items():
        Card(name=name, kind=kinds[name], base_model=base_model, base_fingerprint=fingerprint,
             command="ragqa.benchmarks.bench.bench_generate (random weights)").save(directory)
    return dirs


def _cold(gen) -> None:
    """The next prompt is read whole: a benchmark that repeats one prompt times reading it, not
    the prompt cache (Generator.forget_prompts; generators without one read every prompt)."""
    getattr(gen, "forget_prompts", lambda: None)()


def _whole(gen):
    """``gen`` reading every prompt whole, in one piece, as the baselines it is timed against
    (raw ``generate``, llama.cpp) do: no system-turn cache (Generator.system_cache)."""
    if hasattr(gen, "system_cache"):
        gen.system_cache = False
    return gen


def bench_generate(settings: Settings, out: Path, *, max_new_tokens: int = 48, runs: int = 3,
                   echo: Callable[[str], None] = print) -> dict:
    """On one model (``settings.model``), in one process:

    1. a RAG prompt: the ``qa`` template with 3 passages from ``data/demo/apollo_program.md``;
    2. ``Generator.generate(prompt, "base")`` ``runs`` times after a warm-up: tokens/s, first token;
    3. the same prompt through a separately loaded plain ``AutoModelForCausalLM`` (same weights,
       dtype, threads, greedy, repetition penalty, the same number of new tokens), interleaved
       with 2. so background load hits both alike: tokens/s, first token (a 1-token generate);
    4. three random variants (LoRA a/b, 20-token soft prompt) loaded into the Generator, then
       calls alternating base/lora-a/lora-b/soft-prompt (1 new token): switch_ms, base not
       reloaded (same module object and weight pointers), base output unchanged, RSS per variant.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragqa.generators import GenerationSettings
    from ragqa.generators.models import model_fingerprint, resolve_model, torch_dtype
    from ragqa.answering.pipeline import make_generator
    from ragqa.answering.prompting import build_prompt, load_template

    runs = max(1, int(runs))
    n_max = int(max_new_tokens)
    results: dict = {"model": settings.model, "machine": machine_info(settings.threads),
                     "settings": {"threads": settings.threads, "gen_dtype": _dtype(settings.gen_dtype),
                                  "max_new_tokens": n_max, "runs": runs}}
    echo(f"resolving {settings.model} ...")
    model_dir = resolve_model(settings.model, settings.cache_dir)
    fingerprint = model_fingerprint(model_dir)
    results.update(model_dir=str(model_dir), fingerprint=fingerprint)

    gen = _whole(make_generator(settings))
    t_load, _ = _timed(gen.load)
    results["ragqa_load_s"] = t_load
    prompt = build_prompt(GEN_QUESTION, _demo_passages(3), load_template("qa"), gen.tokenizer,
                          max_prompt_tokens=GEN_PROMPT_BUDGET)
    results["prompt"] = {"tokens": prompt.tokens, "passages": len(prompt.passages),
                         "truncated": prompt.truncated, "template": "qa", "question": GEN_QUESTION,
                         "source": "data/demo/apollo_program.md"}
    gs = GenerationSettings(max_new_tokens=n_max)  # greedy, the default repetition penalty

    # ---- the plain transformers baseline: same weights, dtype, threads, prompt ids
    echo(f"loading a plain AutoModelForCausalLM from {model_dir} ...")
    torch.set_num_threads(settings.threads)
    t_raw_load, raw = _timed(lambda: AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch_dtype(settings.gen_dtype)))
    raw.eval()
    results["raw_load_s"] = t_raw_load
    raw_tok = AutoTokenizer.from_pretrained(str(model_dir))
    bos = raw_tok.bos_token
    enc = raw_tok(prompt.text, return_tensors="pt",
                  add_special_tokens=not (bos and prompt.text.startswith(bos)))
    pad_id = raw_tok.pad_token_id if raw_tok.pad_token_id is not None else raw_tok.eos_token_id

    def raw_generate(n: int):
        torch.set_num_threads(settings.threads)
        t0 = time.perf_counter()
        ids = raw.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, repetition_penalty=gs.repetition_penalty,
                           pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
        return time.perf_counter() - t0, ids[0, enc["input_ids"].shape[1]:].tolist()

    echo(f"warm-up: ragqa and raw generate, {n_max} new tokens on a {prompt.tokens}-token prompt ...")
    warm = gen.generate(prompt.text, "base", gs)
    n_new = warm.new_tokens  # greedy: every run gives these tokens; the baseline is held to the count
    raw_generate(n_new)
    raw_generate(1)
    rg: dict[str, list] = {"new_tokens": [], "tokens_per_s": [], "generate_ms": [], "first_token_ms": []}
    rw: dict[str, list] = {"new_tokens": [], "tokens_per_s": [], "generate_ms": [], "first_token_ms": []}
    same_ids = True
    for i in range(runs):
        echo(f"run {i + 1}/{runs} ...")
        _cold(gen)
        r = gen.generate(prompt.text, "base", gs)
        rg["new_tokens"].append(r.new_tokens)
        rg["tokens_per_s"].append(r.tokens_per_s)
        rg["generate_ms"].append(r.generate_ms)
        rg["first_token_ms"].append(r.first_token_ms)
        seconds, ids = raw_generate(r.new_tokens)
        same_ids = same_ids and ids == r.token_ids
        rw["new_tokens"].append(len(ids))
        rw["tokens_per_s"].append(len(ids) / seconds)
        rw["generate_ms"].append(1000 * seconds)
        rw["first_token_ms"].append(1000 * raw_generate(1)[0])
    for d in (rg, rw):
        d["tokens_per_s_median"] = statistics.median(d["tokens_per_s"])
        d["first_token_ms_median"] = statistics.median(d["first_token_ms"])
        d["generate_ms_median"] = statistics.median(d["generate_ms"])
    rg["prompt_tokens"] = r.prompt_tokens
    rw["prompt_tokens"] = int(enc["input_ids"].shape[1])
    rw["first_token_ms_how"] = "a generate call with max_new_tokens=1"
    results["ragqa"], results["raw"] = rg, rw
    results["same_token_ids"] = same_ids
    results["ended_early"] = n_new < n_max  # the model stopped (end of turn) before max_new_tokens
    results["speed_vs_raw"] = rg["tokens_per_s_median"] / rw["tokens_per_s_median"]
    results["first_token_vs_raw"] = rg["first_token_ms_median"] / rw["first_token_ms_median"]

    # ---- variants: made on the baseline model (never on the Generator's base), loaded by directory
    work = Path(tempfile.mkdtemp(prefix="ragqa-bench-gen-"))
    try:
        echo("creating 2 random LoRA adapters and a 20-token soft prompt ...")
        dirs = _make_bench_adapters(raw, work, settings.model, fingerprint)
        del raw
        model_id, ptrs = id(gen.model), _base_weight_ptrs(gen.model)
        short = gen.chat_prompt("Who flew to the Moon first?")
        check = GenerationSettings(max_new_tokens=16)  # 8 tokens can coincide by chance
        base_before = gen.generate(short, "base", check).token_ids

        _settle_memory()
        rss0 = rss = _rss_mb()
        memory: dict = {"rss_mb_before_variants": rss0, "rss_mb_after": {}, "added_mb": {}, "load_ms": {},
                        "adapter_file_kb": {}}
        for name in SWITCH_VARIANTS:
            t, _ = _timed(lambda name=name: gen.load_variant(str(dirs[name])))
            _settle_memory()
            now = _rss_mb()
            memory["added_mb"][name], rss = now - rss, now
            memory["rss_mb_after"][name] = now
            memory["load_ms"][name] = 1000 * t
            memory["adapter_file_kb"][name] = sum(
                p.stat().st_size for p in dirs[name].glob("*.safetensors")) / 1024
        memory["rss_mb_after_variants"] = rss
        memory["mb_per_extra_variant"] = (rss - rss0) / len(SWITCH_VARIANTS)
        results["memory"] = memory

        echo(f"switching base/{'/'.join(SWITCH_VARIANTS)}, 1 new token, {SWITCH_ROUNDS} rounds ...")
        order, switch, call = _time_switches(gen, short, SWITCH_VARIANTS, SWITCH_ROUNDS)
        every = [x for v in order for x in switch[v]]
        base_after = gen.generate(short, "base", check).token_ids
        changes = {v: gen.generate(short, v, check).token_ids != base_after for v in SWITCH_VARIANTS}
        results["switching"] = {
            "order": list(order), "rounds": SWITCH_ROUNDS, "switches": len(every),
            "switch_ms": switch, "switch_ms_mean": statistics.fmean(every), "switch_ms_max": max(every),
            "variant_switch_ms_mean": {v: statistics.fmean(switch[v]) for v in SWITCH_VARIANTS},
            "variant_switch_ms_max": {v: max(switch[v]) for v in SWITCH_VARIANTS},
            "one_token_call_ms_median": {v: statistics.median(call[v]) for v in order},
            "base_model_object_unchanged": id(gen.model) == model_id,
            "base_weight_ptrs_unchanged": _base_weight_ptrs(gen.model) == ptrs,
            "base_output_unchanged": base_after == base_before,
            "variant_changes_output": changes}
        sw = results["switching"]
        sw["base_reloaded"] = not (sw["base_model_object_unchanged"] and sw["base_weight_ptrs_unchanged"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(results, indent=1) + "\n")
    echo(format_generate_table(results))
    echo(f"wrote {out}")
    return results


def format_generate_table(r: dict) -> str:
    g, w, sw, mem = r["ragqa"], r["raw"], r["switching"], r["memory"]
    p, m = r["prompt"], r["machine"]
    n = g["new_tokens"][0] if g["new_tokens"] else 0
    ended = " (the model ended its answer there)" if r["ended_early"] else ""
    yes_no = lambda b: "yes" if b else "no"  # noqa: E731
    lines = [f"model {r['model']} ({r['settings']['gen_dtype']}), {r['settings']['threads']} thread(s), "
             f"{m['cpu']}; load average at start {m['load_avg_at_start']:.2f}",
             "| measurement | value | goal |", "|---|---|---|",
             f"| prompt (qa template, {p['passages']} passages{', last cut to fit' if p['truncated'] else ''}) "
             f"| {p['tokens']} tokens | |",
             f"| ragqa Generator.generate, median of {len(g['tokens_per_s'])} ({n} new tokens{ended}) "
             f"| {g['tokens_per_s_median']:.1f} tok/s, {g['generate_ms_median']:.0f} ms | |",
             f"| raw model.generate, same prompt / weights / dtype / threads / {w['new_tokens'][0]} new tokens "
             f"| {w['tokens_per_s_median']:.1f} tok/s, {w['generate_ms_median']:.0f} ms | |",
             f"| ragqa speed vs raw | {r['speed_vs_raw']:.2f}x (same tokens: {yes_no(r['same_token_ids'])}) "
             f"| >= 0.95x |",
             f"| time to first token, ragqa / raw (1-token generate) | {g['first_token_ms_median']:.0f} / "
             f"{w['first_token_ms_median']:.0f} ms ({r['first_token_vs_raw']:.2f}x) | |",
             f"| variant switch_ms, mean / max over {sw['switches']} calls (base, lora-a, lora-b, soft-prompt) "
             f"| {sw['switch_ms_mean']:.2f} / {sw['switch_ms_max']:.2f} ms | <= 50 ms |",
             "| switch_ms mean / max per variant | " + ", ".join(
                 f"{v} {sw['variant_switch_ms_mean'][v]:.2f} / {sw['variant_switch_ms_max'][v]:.2f}"
                 for v in SWITCH_VARIANTS) + " ms | |",
             "| 1-token call on a short prompt, median | " + ", ".join(
                 f"{v} {ms:.0f}" for v, ms in sw["one_token_call_ms_median"].items()) + " ms | |",
             f"| base reloaded (module object, weight data_ptr) | {yes_no(sw['base_reloaded'])} | no |",
             f"| base output identical after switching | {yes_no(sw['base_output_unchanged'])} | yes |",
             "| variants change the output | " + ", ".join(
                 f"{v} {yes_no(c)}" for v, c in sw["variant_changes_output"].items()) + " | |",
             f"| resident memory per extra variant (VmRSS) | {mem['mb_per_extra_variant']:.1f} MB ("
             + ", ".join(f"{v} +{mb:.1f}" for v, mb in mem["added_mb"].items()) + f"; RSS "
             f"{mem['rss_mb_before_variants']:.0f} -> {mem['rss_mb_after_variants']:.0f} MB) | |"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ all in one go

DEMO_CORPUS = resources.demo_corpus()
QUICK_MODEL = "smollm2-135m-instruct"
# questions about the demo corpus, cycled for the query-latency stage when no queries file is given
BENCH_QUESTIONS = (
    "When did Apollo 11 land on the Moon?", "Who designed the Saturn V rocket?",
    "How did the Black Death spread across Europe?", "How many people died of the plague?",
    "Who improved the steam engine with a separate condenser?", "What powered the first railways?",
    "Who discovered oxygen?", "Why is oxygen needed for combustion?",
    "How much rain falls in the Amazon rainforest?", "Which countries share the Amazon basin?")
ALL_STAGES = ("index", "query", "generate", "switch", "train")


@dataclass
class AllPlan:
    """The sizes of one ``bench_all`` run."""

    documents: int  # documents taken from a JSONL corpus (a folder is indexed whole)
    queries: int  # per retrieval mode
    max_new_tokens: int
    runs: int  # recorded generations after a warm-up
    switch_rounds: int  # recorded rounds of base -> each variant (after a warm-up round)
    train_steps: int
    train_batch_size: int
    train_seq_len: int


QUICK_PLAN = AllPlan(documents=200, queries=20, max_new_tokens=16, runs=1, switch_rounds=2, train_steps=3,
                     train_batch_size=2, train_seq_len=128)
FULL_PLAN = AllPlan(documents=1000, queries=100, max_new_tokens=48, runs=3, switch_rounds=SWITCH_ROUNDS,
                    train_steps=3, train_batch_size=4, train_seq_len=256)


def _run_stage(name: str, fn: Callable[[], dict], echo: Callable[[str], None]) -> dict:
    """One stage's numbers; a stage that fails records its error and the others still run."""
    echo(f"[{name}] ...")
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - one stage failing must not lose the others' numbers
        out = {"status": "failed", "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:300]}
    out.setdefault("status", "ok")
    out["stage_s"] = time.perf_counter() - t0
    echo(f"[{name}] {out['status']}{': ' + out['error'] if 'error' in out else ''} ({out['stage_s']:.1f} s)")
    return out


def stage_index(paths: list[Path], settings: Settings, directory: Path) -> dict:
    """A full build (no embedding cache; the embedder's one-time ONNX export is done before the
    clock starts, its loading is part of the build) and an unchanged rebuild."""
    from ragqa.indexing.embedding import get_embedder
    from ragqa.indexing.index import Index

    s = settings.replace(embedding_cache=False)
    get_embedder(s).encode(["warm up"])
    t_full, report = _timed(lambda: Index.build(paths, directory, s, warn=lambda w: None))
    t_same, _ = _timed(lambda: Index.build(paths, directory, s, warn=lambda w: None))
    return {"corpus": [str(p) for p in paths], "documents": report.documents, "chunks": report.chunks,
            "build_s": t_full, "docs_per_s": report.documents / t_full, "chunks_per_s": report.chunks / t_full,
            "unchanged_rebuild_s": t_same}


def stage_query(directory: Path, settings: Settings, texts: list[str],
                modes: tuple[str, ...] = ("dense", "bm25", "hybrid"), k: int = 10) -> dict:
    """Per mode: single-query latency (p50 / p95 / mean) of ``Index.search`` after 3 warm-up queries."""
    from ragqa.indexing.index import Index

    out: dict = {"queries": len(texts), "k": k}
    with Index.open(directory, settings) as idx:
        for mode in modes:
            for q in texts[:3]:
                idx.search(q, k=k, mode=mode)
            ms = [1000 * _timed(lambda q=q: idx.search(q, k=k, mode=mode))[0] for q in texts]
            out[mode] = {"p50_ms": statistics.median(ms), "p95_ms": _p95(ms), "mean_ms": statistics.fmean(ms),
                         "queries_per_s": 1000 / statistics.fmean(ms)}
    return out


def stage_generate(gen, *, max_new_tokens: int, runs: int) -> dict:
    """``generate`` on the benchmark RAG prompt (the ``qa`` template, 3 demo passages), after a
    warm-up: medians of tokens/s, first token and the whole call."""
    from ragqa.generators import GenerationSettings
    from ragqa.answering.prompting import build_prompt, load_template

    t_load = _timed(gen.load)[0] if hasattr(gen, "load") else 0.0
    prompt = build_prompt(GEN_QUESTION, _demo_passages(3), load_template("qa"), gen.tokenizer,
                          max_prompt_tokens=GEN_PROMPT_BUDGET)
    gs = GenerationSettings(max_new_tokens=max_new_tokens)
    gen.generate(prompt.text, "base", gs)
    rs = []
    for _ in range(max(1, runs)):
        _cold(gen)
        rs.append(gen.generate(prompt.text, "base", gs))
    return {"model": getattr(gen, "model_name", "?"), "load_s": t_load, "prompt_tokens": prompt.tokens,
            "max_new_tokens": max_new_tokens, "runs": len(rs), "new_tokens": [r.new_tokens for r in rs],
            "tokens_per_s_median": statistics.median(r.tokens_per_s for r in rs),
            # the tokens after the first over the time after it: generation speed without the prompt
            "decode_tokens_per_s_median": statistics.median(
                (r.new_tokens - 1) / max((r.generate_ms - r.first_token_ms) / 1000, 1e-9) for r in rs),
            "first_token_ms_median": statistics.median(r.first_token_ms for r in rs),
            "generate_ms_median": statistics.median(r.generate_ms for r in rs)}


def _time_switches(gen, prompt: str, variants, rounds: int):
    """Calls alternating base and every variant, 1 new token each, ``rounds`` times after a warm-up
    round: (order, switch_ms per variant, switch + generate ms per variant)."""
    from ragqa.generators import GenerationSettings

    one = GenerationSettings(max_new_tokens=1)
    order = ("base", *variants)
    switch: dict[str, list[float]] = {v: [] for v in order}
    call: dict[str, list[float]] = {v: [] for v in order}
    for rnd in range(rounds + 1):
        for v in order:
            res = gen.generate(prompt, v, one)
            if rnd:  # round 0 is a warm-up
                switch[v].append(res.switch_ms)
                call[v].append(res.generate_ms + res.switch_ms)
    return order, switch, call


def stage_switch(gen, variants: list[str], *, rounds: int) -> dict:
    """Calls alternating base and every variant (1 new token on a short prompt): switch_ms per
    call, and the median call time per variant."""
    if not variants:
        return {"status": "skipped (no variants)"}
    question = "Who flew to the Moon first?"
    short = gen.chat_prompt(question) if hasattr(gen, "chat_prompt") else question
    order, switch, call = _time_switches(gen, short, variants, rounds)
    every = [x for v in order for x in switch[v]]
    return {"order": list(order), "rounds": rounds, "switches": len(every),
            "switch_ms_mean": statistics.fmean(every), "switch_ms_max": max(every),
            "one_token_call_ms_median": {v: statistics.median(call[v]) for v in order}}


def _random_variants(gen, settings: Settings, work: Path) -> list[str]:
    """Two random LoRA adapters and a soft prompt (as bench_generate makes them, on a separately
    loaded plain model), loaded into ``gen``; their names."""
    import torch
    from transformers import AutoModelForCausalLM

    from ragqa.generators.models import model_fingerprint, resolve_model, torch_dtype

    model_dir = resolve_model(settings.model, settings.cache_dir)
    torch.set_num_threads(settings.threads)
    plain = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype(settings.gen_dtype))
    dirs = _make_bench_adapters(plain, work, settings.model, model_fingerprint(model_dir))
    del plain
    _settle_memory()
    return [gen.load_variant(str(d)) for d in dirs.values()]


def stage_train(settings: Settings, plan: AllPlan) -> dict:
    """ragqa.training.throughput.bench_train (training steps/s, ragqa vs a bare PEFT loop), when
    that module is installed; "skipped (not available)" otherwise."""
    try:
        from ragqa.training.throughput import bench_train
    except ImportError as exc:
        return {"status": "skipped (not available)", "reason": str(exc)}
    sizes = {"steps": plan.train_steps, "batch_size": plan.train_batch_size, "seq_len": plan.train_seq_len}
    result = bench_train(model=settings.model, cache_dir=settings.cache_dir, threads=settings.threads, **sizes)
    return {"model": settings.model, **sizes, "result": result}


def bench_all(settings: Settings, out: Path, *, quick: bool = False, corpus: Path | None = None,
              queries: Path | None = None, stages: tuple[str, ...] = ALL_STAGES,
              echo: Callable[[str], None] = print) -> dict:
    """Every benchmark in one process, sized by QUICK_PLAN or FULL_PLAN: index build (``corpus``:
    a folder or file, a JSONL corpus cut to the plan's documents; default data/demo), query
    latency per mode, generation tokens/s and first token (``settings.model``), variant switching
    (two random LoRAs and a soft prompt on a real model; a fake generator's own variants) and
    training throughput. Writes ``out`` (JSON with machine info) and ``out`` with .md (the table)."""
    plan = QUICK_PLAN if quick else FULL_PLAN
    unknown = set(stages) - set(ALL_STAGES)
    if unknown:
        from ragqa.errors import ConfigError

        raise ConfigError(f"unknown bench stage(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_STAGES)}")
    corpus = corpus or DEMO_CORPUS
    if not corpus.exists():
        from ragqa.errors import InputNotFound

        raise InputNotFound(f"{corpus}: no such corpus")
    t0 = time.perf_counter()
    results: dict = {"quick": quick, "plan": dataclasses.asdict(plan), "machine": machine_info(settings.threads),
                     "settings": {"embedder": settings.embedder, "embed_backend": settings.embed_backend,
                                  "threads": settings.threads, "model": settings.model,
                                  "gen_dtype": _dtype(settings.gen_dtype)},
                     "stages": {}}
    st = results["stages"]
    work = Path(tempfile.mkdtemp(prefix="ragqa-bench-all-"))
    try:
        paths = [corpus]
        if corpus.is_file() and corpus.suffix == ".jsonl":
            rows = [o for _, o in read_jsonl(corpus, "corpus")]
            paths = [work / "corpus.jsonl"]
            _write_jsonl(paths[0], rows[:plan.documents])
        if "index" in stages or "query" in stages:
            st["index"] = _run_stage("index", lambda: stage_index(paths, settings, work / "idx"), echo)
        if "query" in stages:
            if queries:
                texts = [o["text"] for _, o in read_jsonl(queries, "queries file")][:plan.queries]
            else:
                texts = [BENCH_QUESTIONS[i % len(BENCH_QUESTIONS)] for i in range(plan.queries)]
            st["query"] = (_run_stage("query", lambda: stage_query(work / "idx", settings, texts), echo)
                           if st["index"]["status"] == "ok" else {"status": "skipped (no index)"})
        if "generate" in stages or "switch" in stages:
            from ragqa.answering.pipeline import make_generator

            gen = _whole(make_generator(settings))
            if "generate" in stages:
                st["generate"] = _run_stage("generate", lambda: stage_generate(
                    gen, max_new_tokens=plan.max_new_tokens, runs=plan.runs), echo)
            if "switch" in stages:
                def switch() -> dict:
                    if hasattr(gen, "load_variant"):
                        names = _random_variants(gen, settings, work / "variants")
                    else:  # a fake generator: its own variants
                        names = [v["name"] for v in gen.variants() if v["name"] != "base"]
                    return stage_switch(gen, names, rounds=plan.switch_rounds)

                st["switch"] = _run_stage("switch", switch, echo)
            del gen
            _settle_memory()
        if "train" in stages:
            st["train"] = _run_stage("train", lambda: stage_train(settings, plan), echo)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = time.perf_counter() - t0
    results["load_avg_at_end"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(results, indent=1) + "\n")
    write_atomic(out.with_suffix(".md"), format_all_table(results) + "\n")
    return results


def _fmt_value(x) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def all_table_rows(r: dict) -> list[tuple[str, str, str]]:
    """(stage, measurement, value) rows of a bench_all result."""
    rows: list[tuple[str, str, str]] = []
    st = r["stages"]
    for name in ALL_STAGES:
        s = st.get(name)
        if s is None:
            continue
        if s["status"] != "ok":
            rows.append((name, s["status"], s.get("error", s.get("reason", ""))))
            continue
        if name == "index":
            rows += [("index", f"full build: {s['documents']} documents -> {s['chunks']} chunks",
                      f"{s['build_s']:.1f} s ({s['docs_per_s']:.1f} docs/s, {s['chunks_per_s']:.1f} chunks/s)"),
                     ("index", "unchanged rebuild", f"{s['unchanged_rebuild_s']:.2f} s")]
        elif name == "query":
            for mode in ("dense", "bm25", "hybrid"):
                if mode in s:
                    q = s[mode]
                    rows.append(("query", f"{mode}, k={s['k']}, p50 / p95 over {s['queries']} queries",
                                 f"{q['p50_ms']:.1f} / {q['p95_ms']:.1f} ms ({q['queries_per_s']:.0f} queries/s)"))
        elif name == "generate":
            ended = " (the model ended its answer there)" if s["new_tokens"][0] < s["max_new_tokens"] else ""
            rows += [("generate", f"{s['model']}: load", f"{s['load_s']:.1f} s"),
                     ("generate", f"{s['prompt_tokens']}-token RAG prompt, {s['new_tokens'][0]} new tokens{ended}, "
                      f"median of {s['runs']}",
                      f"{s['tokens_per_s_median']:.1f} tokens/s over the whole call ({s['generate_ms_median']:.0f} ms); "
                      f"first token {s['first_token_ms_median']:.0f} ms, then "
                      f"{s['decode_tokens_per_s_median']:.1f} tokens/s")]
        elif name == "switch":
            rows += [("switch", f"switch_ms mean / max over {s['switches']} calls ({', '.join(s['order'])})",
                      f"{s['switch_ms_mean']:.2f} / {s['switch_ms_max']:.2f} ms"),
                     ("switch", "1-token call on a short prompt, median",
                      ", ".join(f"{v} {ms:.0f}" for v, ms in s["one_token_call_ms_median"].items()) + " ms")]
        elif name == "train":
            res = s["result"] if isinstance(s.get("result"), dict) else {"result": s.get("result")}
            sizes = f"{s['model']}, {s['steps']} steps, batch {s['batch_size']}, {s['seq_len']} tokens"
            if "ratio" in res and "bare_step_s_median" in res:
                rows.append(("train", f"LoRA step, ragqa train vs a bare PEFT loop ({sizes})",
                             f"{res['ragqa_step_s_median']:.2f} vs {res['bare_step_s_median']:.2f} s/step "
                             f"-> {res['ratio']:.3f}x"))
            else:
                for key, value in res.items():
                    if isinstance(value, (int, float, str, bool)) or value is None:
                        rows.append(("train", f"{key} ({sizes})", _fmt_value(value)))
    return rows


def format_all_table(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    lines = [f"{'quick' if r['quick'] else 'full'} run, {s['threads']} thread(s), {m['cpu']}, {m['cores']} cores; "
             f"embedder {s['embedder']} ({s['embed_backend']}), generator {s['model']} ({s['gen_dtype']}); "
             f"load average {m['load_avg_at_start']:.2f} at start, {r['load_avg_at_end']:.2f} at end; "
             f"{r['total_s']:.0f} s in all",
             "", "| stage | measurement | value |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in all_table_rows(r)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ whole answers

def flags_words(r: dict) -> str:
    """``[avx2 avx512f ...]`` for a result's header, with the instruction-set limits it ran under
    (``machine.isa_limits``): ``[...; code limited by ATEN_CPU_CAPABILITY=avx2 ...]``."""
    limits = r.get("machine", {}).get("isa_limits") or {}
    words = " ".join(r.get("cpu_flags", []))
    if limits:
        words += "; code limited by " + " ".join(f"{k}={v}" for k, v in limits.items())
    return f"[{words}]"


def cpu_flags() -> list[str]:
    """The CPU features that decide generation speed here (bf16 and int8 dot products, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
    return [f for f in wanted if f in flags]


def bench_answers(settings: Settings, out: Path, *, index: Path | None = None,
                  questions: tuple[str, ...] = BENCH_QUESTIONS, variant: str = "base",
                  echo: Callable[[str], None] = print) -> dict:
    """Each question answered end to end as ``ragqa ask`` answers it (retrieval, gate, prompt,
    generation, citation) over ``index`` (default: the demo corpus indexed into a temporary
    directory), after one warm-up answer: seconds per answer p50 / p95 with the prompt reading
    and the decoding apart. The answers are kept in the JSON so speed is never read without them."""
    from ragqa.indexing.index import Index
    from ragqa.answering.pipeline import RagQA

    work = None
    if index is None:
        work = Path(tempfile.mkdtemp(prefix="ragqa-bench-answers-"))
        index = work / "demo"
        echo(f"indexing {DEMO_CORPUS} ...")
        Index.build([DEMO_CORPUS], index, settings)
    results: dict = {"model": settings.model, "variant": variant, "machine": machine_info(settings.threads),
                     "cpu_flags": cpu_flags(),
                     "settings": {"threads": settings.threads, "gen_dtype": _dtype(settings.gen_dtype),
                                  "template": settings.template, "top_k": settings.top_k,
                                  "max_prompt_tokens": settings.max_prompt_tokens,
                                  "repetition_penalty": settings.repetition_penalty,
                                  **decode_settings(settings)},
                     "index": str(index) if work is None else "data/demo (temporary index)"}
    try:
        with RagQA.open(index, settings) as qa:
            echo(f"loading {settings.model} ...")
            t_load, _ = _timed(lambda: getattr(qa.generator, "load", lambda: None)())
            results["load_s"] = t_load
            qa.ask(questions[0], variant=variant)  # warm-up
            _cold(qa.generator)  # the first question is read whole, as after loading; the next ones
            # share the system instruction with the one before (the prompt cache), as in a session
            rows = []
            for i, q in enumerate(questions, 1):
                t0 = time.perf_counter()
                ans = qa.ask(q, variant=variant)
                seconds = time.perf_counter() - t0
                t = ans.timings
                rows.append({"question": q, "answer": ans.text, "abstained": ans.abstained, "seconds": seconds,
                             **{k: t.get(k) for k in ("retrieve_ms", "prompt_tokens", "first_token_ms", "decode_ms",
                                                     "new_tokens", "prompt_tokens_per_s", "decode_tokens_per_s",
                                                     "reused_tokens")}})
                echo(f"{i}/{len(questions)} {seconds:.1f} s: {ans.text[:70]}")
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    secs = [r["seconds"] for r in rows]
    generated = [r for r in rows if r["first_token_ms"] is not None]

    def med(key):
        vals = [r[key] for r in generated if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    results["answers"] = rows
    results["seconds_p50"] = statistics.median(secs)
    results["seconds_p95"] = float(np.percentile(secs, 95))
    results["seconds_max"] = max(secs)
    for key in ("prompt_tokens", "first_token_ms", "decode_ms", "new_tokens", "decode_tokens_per_s",
                "prompt_tokens_per_s"):
        results[f"{key}_p50"] = med(key)
    _write_results(out, results, format_answers_table(results), echo)
    return results


def _write_results(out: Path, results: dict, table: str, echo: Callable[[str], None]) -> None:
    """A benchmark's JSON at ``out`` and its table beside it as ``.md``; the table is echoed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_atomic(out.with_suffix(".md"), table + "\n")
    echo(table)
    echo(f"wrote {out} and {out.with_suffix('.md')}")


def format_answers_table(r: dict) -> str:
    m = r["machine"]

    def num(x, fmt):
        return fmt.format(x) if x is not None else "-"

    lines = [f"{len(r['answers'])} questions answered end to end by {r['model']} ({r['variant']}), "
             f"{r['settings']['threads']} threads, {r['settings']['gen_dtype']}"
             f"{decoding_words(r['settings'])}; {m['cpu']} "
             f"{flags_words(r)}, load {m['load_avg_at_start']:.1f}",
             "| measurement | p50 |", "|---|---|",
             f"| seconds per answer (retrieval, prompt, generation) | {r['seconds_p50']:.1f} "
             f"(p95 {r['seconds_p95']:.1f}, max {r['seconds_max']:.1f}) |",
             f"| prompt tokens | {num(r['prompt_tokens_p50'], '{:.0f}')} |",
             f"| reading the prompt (to the first token) s | {num(r['first_token_ms_p50'] and r['first_token_ms_p50'] / 1000, '{:.2f}')} |",
             f"| new tokens | {num(r['new_tokens_p50'], '{:.0f}')} |",
             f"| decoding after the first token s | {num(r['decode_ms_p50'] and r['decode_ms_p50'] / 1000, '{:.2f}')} |",
             f"| decode tokens/s | {num(r['decode_tokens_per_s_p50'], '{:.1f}')} |"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the llama.cpp peer

PEER_REGIMES = {
    # a RAG answer: a long prompt (passages), a short answer; prompt-bound
    "rag": {"prompt_tokens": 900, "new_tokens": 20},
    # a long answer after a shorter prompt; decode-bound
    "long": {"prompt_tokens": 500, "new_tokens": 96},
}


def _peer_prompt(gen, prompt_tokens: int) -> str:
    """The demo corpus's Apollo passages under the qa-short template, filled up to about
    ``prompt_tokens`` tokens (the RAG prompt a user's question builds)."""
    from ragqa.answering.prompting import build_prompt, load_template

    return build_prompt(GEN_QUESTION, _demo_passages(40), load_template("qa-short"), gen.tokenizer,
                        max_prompt_tokens=prompt_tokens).text


class LlamaCppPeer:
    """llama.cpp (``llama-cpp-python``) on the same GGUF, fed the same token ids, greedy, held to
    the same number of new tokens; times reading the prompt and decoding apart."""

    def __init__(self, gguf: Path, threads: int, n_ctx: int = 4096):
        try:
            from llama_cpp import Llama
        except ImportError:
            from ragqa.errors import ConfigError

            raise ConfigError("bench peer needs llama-cpp-python, which has no CPU wheel: "
                              "CMAKE_ARGS=\"-DLLAVA_BUILD=OFF\" pip install llama-cpp-python==0.3.36 "
                              "(builds llama.cpp from source, ~25 min on 2 cores)") from None
        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         n_batch=512, logits_all=False, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def _argmax(self) -> int:
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))
        return int(logits.argmax())

    def run(self, ids: list[int], n: int) -> dict:
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval(ids)
        token = self._argmax()
        first = time.perf_counter()
        out = [token]
        for _ in range(n - 1):
            self.llm.eval([token])
            token = self._argmax()
            out.append(token)
        end = time.perf_counter()
        return {"first_token_ms": 1000 * (first - t0), "decode_ms": 1000 * (end - first),
                "generate_ms": 1000 * (end - t0), "new_tokens": len(out), "token_ids": out}


def bench_peer(settings: Settings, out: Path, *, runs: int = 3, regimes: dict | None = None,
               variant: str = "base", echo: Callable[[str], None] = print) -> dict:
    """ragqa's generator against llama.cpp on the packaged model's own GGUF: for each regime the
    same prompt (token ids), greedy, the same number of new tokens, ``runs`` rounds interleaved
    (ragqa, llama.cpp, ragqa, ...) after a warm-up of each; medians of the whole call, of reading
    the prompt and of decoding, and the ratios (llama.cpp time / ragqa time: above 1, ragqa is
    faster)."""
    from ragqa.generators import GenerationSettings
    from ragqa.generators.models import BASE_MODELS, gguf_path
    from ragqa.answering.pipeline import make_generator

    if settings.model not in BASE_MODELS:
        from ragqa.errors import ConfigError

        raise ConfigError(f"bench peer compares on a packaged model's GGUF; {settings.model!r} is none of "
                          f"{', '.join(BASE_MODELS)}")
    regimes = regimes or PEER_REGIMES
    gguf = gguf_path(settings.model, settings.cache_dir)
    results: dict = {"model": settings.model, "variant": variant, "gguf": str(gguf),
                     "machine": machine_info(settings.threads), "cpu_flags": cpu_flags(),
                     "settings": {"threads": settings.threads, "gen_dtype": _dtype(settings.gen_dtype),
                                  **decode_settings(settings),
                                  "runs": runs}, "regimes": {}}
    gen = _whole(make_generator(settings))
    echo(f"loading {settings.model} in ragqa and {gguf.name} in llama.cpp ...")
    gen.load()
    peer = LlamaCppPeer(gguf, settings.threads)
    for name, regime in regimes.items():
        text = _peer_prompt(gen, regime["prompt_tokens"])
        n = int(regime["new_tokens"])
        gs = GenerationSettings(max_new_tokens=n, min_new_tokens=n, repetition_penalty=1.0)
        ids = gen.tokenizer(text, add_special_tokens=False)["input_ids"]
        echo(f"{name}: {len(ids)} prompt tokens, {n} new tokens, {runs} interleaved rounds ...")
        gen.generate(text, variant, gs)  # warm-up
        peer.run(ids, n)
        rows: dict[str, list[dict]] = {"ragqa": [], "llama.cpp": []}
        same = True
        for _ in range(runs):
            _cold(gen)  # llama.cpp resets too: both read the whole prompt every round
            r = gen.generate(text, variant, gs)
            rows["ragqa"].append({"first_token_ms": r.first_token_ms, "decode_ms": r.generate_ms - r.first_token_ms,
                                  "generate_ms": r.generate_ms, "new_tokens": r.new_tokens})
            p = peer.run(ids, n)
            same = same and p["token_ids"][:8] == r.token_ids[:8]
            rows["llama.cpp"].append({k: v for k, v in p.items() if k != "token_ids"})
        med = {engine: {k: statistics.median(x[k] for x in rs) for k in ("first_token_ms", "decode_ms", "generate_ms",
                                                                          "new_tokens")}
               for engine, rs in rows.items()}
        for m in med.values():
            m["decode_tokens_per_s"] = (m["new_tokens"] - 1) / (m["decode_ms"] / 1000) if m["decode_ms"] > 0 else None
        g, p = med["ragqa"], med["llama.cpp"]
        results["regimes"][name] = {
            "prompt_tokens": len(ids), "new_tokens": n, "runs": rows, "median": med,
            "first_8_tokens_equal": same,
            "whole_call_ratio": p["generate_ms"] / g["generate_ms"],
            "prompt_ratio": p["first_token_ms"] / g["first_token_ms"],
            "decode_ratio": p["decode_ms"] / g["decode_ms"] if g["decode_ms"] > 0 else None}
    _write_results(out, results, format_peer_table(results), echo)
    return results


def decode_settings(settings: Settings) -> dict:
    """The settings that say how a result decoded (``decoding_words`` reads them back), with the C
    kernel's instruction set where it was used (None: PyTorch's / fbgemm's kernels)."""
    kernel = None
    if settings.decode_kernel and (settings.decode_int4 or settings.decode_int8):
        from ragqa.generators import qgemv

        lib = qgemv.library(settings.cache_dir)
        kernel = qgemv.isa(lib) if lib is not None else None
    return {"decode_int8": settings.decode_int8, "decode_int4": settings.decode_int4,
            "decode_dynamic_int8": settings.decode_dynamic_int8,
            "prompt_dynamic_int8": settings.prompt_dynamic_int8, "decode_kernel": kernel,
            "fused_decode": bool(settings.fused_decode and kernel)}


def decoding_words(settings: dict) -> str:
    """`` + 4-bit (GGUF) / int8 decoding`` as the settings of a result say (older results have no
    ``decode_int4``), `` (C kernel, avx512-vnni)`` where it was used; a float32 model with
    ``decode_dynamic_int8`` decodes with fbgemm alone where the C kernel was not used."""
    kernel = settings.get("decode_kernel")
    kinds = [k for k, on in (("4-bit (GGUF)", settings.get("decode_int4")),
                             ("int8", settings.get("decode_int8"))) if on]
    if settings.get("decode_dynamic_int8") and str(settings.get("gen_dtype", "")).startswith("float32"):
        if kernel and kinds:
            prompts = ", dynamic int8 (fbgemm) prompts" if settings.get("prompt_dynamic_int8") else ""
            return f" + {' / '.join(kinds)} decoding (C kernel, {kernel}{_fused(settings)}){prompts}"
        if settings.get("prompt_dynamic_int8"):
            return " + dynamic int8 (fbgemm) prompts and decoding"
        return " + dynamic int8 (fbgemm) decoding"
    words = f" + {' / '.join(kinds)} decoding" if kinds else ""
    return f"{words} (C kernel, {kernel}{_fused(settings)})" if words and kernel else words


def _fused(settings: dict) -> str:
    return ", fused steps" if settings.get("fused_decode") else ""


def format_peer_table(r: dict) -> str:
    m = r["machine"]
    lines = [f"{r['model']} ({r['variant']}) against llama.cpp on {Path(r['gguf']).name}, "
             f"{r['settings']['threads']} threads, ragqa {r['settings']['gen_dtype']}"
             f"{decoding_words(r['settings'])}; {m['cpu']} "
             f"{flags_words(r)}, load {m['load_avg_at_start']:.1f}, median of {r['settings']['runs']}",
             "| regime | prompt / new tokens | engine | reading the prompt s | decoding tokens/s | whole call s | "
             "llama.cpp / ragqa (whole call) |", "|---|---|---|---|---|---|---|"]
    for name, x in r["regimes"].items():
        for engine in ("ragqa", "llama.cpp"):
            e = x["median"][engine]
            ratio = f"**{x['whole_call_ratio']:.2f}x**" if engine == "ragqa" else ""
            rate = e["decode_tokens_per_s"]
            lines.append(f"| {name} | {x['prompt_tokens']} / {x['new_tokens']} | {engine} | "
                         f"{e['first_token_ms'] / 1000:.2f} | {rate:.1f} | {e['generate_ms'] / 1000:.2f} | {ratio} |"
                         if rate else f"| {name} | {x['prompt_tokens']} / {x['new_tokens']} | {engine} | "
                         f"{e['first_token_ms'] / 1000:.2f} | - | {e['generate_ms'] / 1000:.2f} | {ratio} |")
    return "\n".join(lines)
