"""``OpenAIGenerator``: the Generator interface over an OpenAI-compatible completions server, so
one vLLM server (base model + many LoRA adapters) can answer for many ragqa front ends.

    gen = OpenAIGenerator("http://gpu-box:8000/v1", tokenizer="qwen2.5-coder-0.5b-instruct")
    gen.generate(prompt, variant="squad-lora").text   # POST /v1/completions {"model": "squad-lora", ...}

Selected with ``--model openai:http://host:8000/v1`` (setting ``model``). The variant name is sent
as the request's ``model``: that is how vLLM's multi-LoRA serving (``vllm serve BASE
--enable-lora --lora-modules squad-lora=adapters/squad-lora``) picks the adapter; ``base`` is
sent as the served base model (setting ``generator_base_model``, else the model the server lists
without a ``parent``). Prompts are built here exactly as for a local model, so the tokenizer for
the prompt budget comes from a local model (setting ``generator_tokenizer``: a packaged model
name or a transformers directory; it must match the served base). Only the standard library is
used (urllib); an API key comes from ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ragqa.errors import ConfigError, ModelError
from ragqa.generators.engine import MAX_CONTEXT, GenerationResult, GenerationSettings

PREFIX = "openai:"


def base_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"model {PREFIX}{url!r}: give the server's URL, e.g. {PREFIX}http://localhost:8000/v1")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIGenerator:
    def __init__(self, url: str, *, tokenizer="qwen2.5-coder-0.5b-instruct", cache_dir: Path | None = None,
                 base_model: str | None = None, context_length: int | None = None, timeout: float = 300.0,
                 api_key: str | None = None):
        self.url = base_url(url)
        self.model_name = f"{PREFIX}{self.url}"
        self._tokenizer_spec = tokenizer
        self._tokenizer = None if isinstance(tokenizer, str) else tokenizer
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._base = base_model or None
        self._context = context_length
        self.timeout = timeout
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")

    def __repr__(self) -> str:
        return f"OpenAIGenerator({self.url!r})"

    # --- HTTP ------------------------------------------------------------------------------
    def _request(self, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if body is not None else "GET")
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("error", detail)
                detail = detail.get("message", detail) if isinstance(detail, dict) else detail
            except (ValueError, AttributeError):
                pass
            hint = ""
            if exc.code == 404 and body is not None:
                hint = f"; the server serves {', '.join(self._served()) or 'nothing'}"
            raise ModelError(f"generator server {self.url}{path}: HTTP {exc.code} "
                             f"({' '.join(str(detail).split())[:200]}){hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ModelError(f"generator server {self.url}: cannot connect ({reason}); start it (e.g. "
                             "`vllm serve MODEL --enable-lora ...`) or fix --model openai:URL") from None

    def _models(self) -> list[dict]:
        with self._request("/models") as resp:
            return list(json.loads(resp.read()).get("data", []))

    def _served(self) -> list[str]:
        try:
            return [m.get("id", "?") for m in self._models()]
        except ModelError:
            return []

    def _served_base(self) -> str:
        if self._base is None:
            models = self._models()
            bases = [m for m in models if not m.get("parent")] or models
            if not bases:
                raise ModelError(f"generator server {self.url}: lists no models")
            self._base = bases[0]["id"]
            if self._context is None and bases[0].get("max_model_len"):
                self._context = int(bases[0]["max_model_len"])
        return self._base

    # --- the Generator interface ---------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            spec = self._tokenizer_spec
            if spec == "fake":
                from ragqa.testing import WordTokenizer

                self._tokenizer = WordTokenizer()
            else:
                from ragqa.generators.models import load_tokenizer, resolve_model

                self._tokenizer = load_tokenizer(resolve_model(spec, self.cache_dir or Path(".cache")))
        return self._tokenizer

    @property
    def context_length(self) -> int:
        if self._context is None:
            try:
                self._served_base()
            except ModelError:
                pass
        return min(int(self._context or 2048), MAX_CONTEXT)

    def variants(self) -> list[dict]:
        """``base`` plus every adapter the server lists (vLLM marks them with a ``parent``)."""
        base = self._served_base()
        out = [{"name": "base", "kind": "base", "base_model": base, "path": self.url}]
        for m in self._models():
            if m.get("id") != base:
                out.append({"name": m["id"], "kind": "lora" if m.get("parent") else "model",
                            "base_model": m.get("parent") or base, "path": f"{self.url} ({m.get('root', m['id'])})"})
        return out

    def load(self) -> None:
        self._served_base()

    def _body(self, prompt: str, variant: str, settings: GenerationSettings | None, stream: bool) -> dict:
        if not prompt:
            raise ConfigError("prompt is empty; give some text")
        s = settings or GenerationSettings()
        s.check()
        body = {"model": self._served_base() if variant == "base" else variant, "prompt": prompt,
                "max_tokens": int(s.max_new_tokens), "temperature": float(s.temperature) if s.do_sample else 0.0,
                "top_p": float(s.top_p) if s.do_sample else 1.0, "stream": stream}
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = float(s.repetition_penalty)  # a vLLM extension
        if s.seed is not None:
            body["seed"] = int(s.seed)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def generate(self, prompt: str, variant: str = "base",
                 settings: GenerationSettings | None = None) -> GenerationResult:
        pieces = self.stream(prompt, variant, settings)
        while True:
            try:
                next(pieces)
            except StopIteration as stop:
                return stop.value

    def stream(self, prompt: str, variant: str = "base",
               settings: GenerationSettings | None = None) -> Iterator[str]:
        """Text pieces as the server sends them (server-sent events); returns the GenerationResult."""
        body = self._body(prompt, variant, settings, stream=True)
        started = time.perf_counter()
        first = None
        text, usage = [], {}
        with self._request("/completions", body) as resp:
            for raw in resp:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    raise ModelError(f"generator server {self.url}: unreadable event {data[:100]!r}") from None
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    piece = choice.get("text") or ""
                    if piece:
                        if first is None:
                            first = time.perf_counter()
                        text.append(piece)
                        yield piece
        ended = time.perf_counter()
        out = "".join(text)
        count = lambda t: len(self.tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
        new = int(usage.get("completion_tokens") or count(out))
        seconds = ended - started
        return GenerationResult(text=out, prompt_tokens=int(usage.get("prompt_tokens") or count(prompt)),
                                new_tokens=new, generate_ms=seconds * 1000,
                                first_token_ms=((first or ended) - started) * 1000 if out else 0.0,
                                tokens_per_s=new / seconds if seconds > 0 else 0.0, variant=variant)
