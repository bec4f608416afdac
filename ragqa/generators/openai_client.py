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
name or a transformers directory; it must match the served base). HTTP goes through httpx; an
API key comes from ``OPENAI_API_KEY``. Each request has one total time limit (setting
``request_timeout``) for connecting and the whole reply, and a reply that is cut short, is not
what was asked for or has fields of the wrong type is a one-line ModelError, never an answer.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

import httpx

from ragqa.errors import ConfigError, ModelError
from ragqa.generators.engine import MAX_CONTEXT, GenerationResult, GenerationSettings
from ragqa.generators.protocol import count_tokens

PREFIX = "openai:"


def base_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"model {PREFIX}{url!r}: give the server's URL, e.g. {PREFIX}http://localhost:8000/v1")
    return url if url.endswith("/v1") else url + "/v1"


def _kind(value) -> str:
    """The JSON name of a value's type, for messages: "an object", "a list", "a string", ..."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bool):
        return "a boolean"
    names = {list: "a list", str: "a string", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _snippet(raw: bytes) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return repr(text[:100]) if text else "an empty body"


def _head(resp: httpx.Response, limit: int = 4096) -> bytes:
    """The first ``limit`` bytes of a reply's body (an error page need not be read to its end)."""
    out = b""
    for chunk in resp.iter_bytes():
        out += chunk
        if len(out) >= limit:
            break
    return out[:limit]


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of a byte stream as each one completes, split at CR / LF only (not at the other
    line breaks ``str.splitlines`` knows, which JSON strings may hold); the last even unended."""
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).splitlines(keepends=True)
        rest = lines.pop() if lines and not lines[-1].endswith((b"\n", b"\r")) else b""
        for line in lines:
            yield line.rstrip(b"\r\n").decode("utf-8", "replace")
    if rest:
        yield rest.decode("utf-8", "replace")


class _Deadline:
    """The total time one request may take, connecting and the whole reply together. Per-read
    timeouts never end a server that sends a keep-alive line every second, so readers check
    ``left()`` at each piece, and a timer shuts the connection's socket down when the time is up
    (which also ends a read waiting on a silent server)."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def left(self) -> float:
        return self.end - time.monotonic()

    def trace(self, event: str, info: dict) -> None:
        """httpcore's ``trace`` extension: keeps the socket of the connection the request uses."""
        if event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            self._sock = info["return_value"].get_extra_info("socket")
            if self.left() <= 0:
                self._expire()

    def _expire(self) -> None:
        try:
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


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
        self.timeout = timeout  # seconds for one whole request: connecting and the entire reply
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")

    def __repr__(self) -> str:
        return f"OpenAIGenerator({self.url!r})"

    # --- HTTP ------------------------------------------------------------------------------
    def _error(self, path: str, what: str) -> ModelError:
        """A one-line ModelError naming the server, the path and what was wrong."""
        return ModelError(" ".join(f"generator server {self.url}{path}: {what}".split()))

    def _reply(self, path: str, body: dict | None = None, *, events: bool = False) -> Iterator[bytes]:
        """The body of the reply to GET ``path`` (POST with a JSON ``body``) in pieces as they
        arrive, all within ``timeout`` seconds. A body cut short just ends (callers check that it
        is complete); HTTP errors, failed connections, the time limit and, with ``events``, a
        reply that is not server-sent events raise ModelError."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        content = json.dumps(body).encode() if body is not None else None
        deadline = _Deadline(self.timeout)
        try:
            with deadline, httpx.Client(timeout=self.timeout, follow_redirects=True) as client, \
                    client.stream("POST" if body is not None else "GET", self.url + path, content=content,
                                  headers=headers, extensions={"trace": deadline.trace}) as resp:
                if resp.is_error:
                    raise self._status_error(resp, path, body)
                ctype = resp.headers.get("content-type", "")
                if events and "text/event-stream" not in ctype.lower():
                    raise self._error(path, f"asked for a stream (text/event-stream) but got "
                                            f"{ctype or 'no content type'}: {_snippet(_head(resp, 200))}")
                try:
                    for chunk in resp.iter_bytes():
                        if deadline.left() <= 0:
                            break
                        yield chunk
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    pass  # the server hung up mid-body (or the deadline shut the connection)
                if deadline.left() <= 0:
                    raise self._time_limit(path)
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TimeoutException) or deadline.left() <= 0:
                raise self._time_limit(path) from None
            reason = " ".join(str(exc).split())
            raise ModelError(f"generator server {self.url}: cannot connect ({reason}); start it (e.g. "
                             "`vllm serve MODEL --enable-lora ...`) or fix --model openai:URL") from None

    def _time_limit(self, path: str) -> ModelError:
        return self._error(path, f"no complete reply within the total time limit of {self.timeout:g} s (setting "
                                 "request_timeout, env RAGQA_REQUEST_TIMEOUT); raise it for long answers or "
                                 "check the server")

    def _status_error(self, resp: httpx.Response, path: str, body: dict | None) -> ModelError:
        detail = _head(resp).decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except (ValueError, AttributeError):
            pass
        hint = ""
        if resp.status_code == 404 and body is not None:
            hint = f"; the server serves {', '.join(self._served()) or 'nothing'}"
        return ModelError(f"generator server {self.url}{path}: HTTP {resp.status_code} "
                          f"({' '.join(str(detail).split())[:200]}){hint}")

    def _models(self) -> list[dict]:
        """The server's model list (GET /models): objects with an "id", checked."""
        raw = b"".join(self._reply("/models"))
        try:
            reply = json.loads(raw)
        except ValueError:
            raise self._error("/models", f"the reply is not JSON: {_snippet(raw)}") from None
        if not isinstance(reply, dict):
            raise self._error("/models", f'expected a JSON object with a "data" list, got {_kind(reply)}')
        models = reply.get("data")
        if models is None:
            return []
        if not isinstance(models, list):
            raise self._error("/models", f'"data" is {_kind(models)}, not a list')
        for i, m in enumerate(models):
            if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m["id"]:
                raise self._error("/models", f'model {i} in "data" has no "id": {json.dumps(m)[:100]}')
            length = m.get("max_model_len")
            if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
                raise self._error("/models", f'"max_model_len" of {m["id"]} is {_kind(length)}, not a whole number')
        return models

    def _served(self) -> list[str]:
        try:
            return [m["id"] for m in self._models()]
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

    def _event(self, data: str) -> tuple[list[str], dict]:
        """The text pieces and the usage (maybe empty) of one completion event, checked."""
        path = "/completions"
        try:
            event = json.loads(data)
        except ValueError:
            raise self._error(path, f"unreadable event {data[:100]!r}") from None
        if not isinstance(event, dict):
            raise self._error(path, f"an event is {_kind(event)}, not a JSON object: {data[:100]!r}")
        usage = event.get("usage") or {}
        if not isinstance(usage, dict):
            raise self._error(path, f'"usage" is {_kind(usage)}, not an object: {data[:100]!r}')
        for key in ("prompt_tokens", "completion_tokens"):
            if usage.get(key) is not None and (isinstance(usage[key], bool) or not isinstance(usage[key], int)):
                raise self._error(path, f'usage "{key}" is {_kind(usage[key])}, not a whole number')
        choices = event.get("choices")
        if choices is None:
            choices = []
        if not isinstance(choices, list):
            raise self._error(path, f'"choices" is {_kind(choices)}, not a list: {data[:100]!r}')
        pieces = []
        for i, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise self._error(path, f"choice {i} is {_kind(choice)}, not an object: {data[:100]!r}")
            text = choice.get("text")
            if text is not None and not isinstance(text, str):
                raise self._error(path, f'"text" of choice {i} is {_kind(text)}, not a string: {data[:100]!r}')
            if text:
                pieces.append(text)
        return pieces, usage

    # --- the Generator interface ---------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from ragqa.generators.models import load_tokenizer, resolve_model

            self._tokenizer = load_tokenizer(resolve_model(self._tokenizer_spec, self.cache_dir or Path(".cache")))
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
        """Text pieces as the server sends them (server-sent events); returns the GenerationResult.
        A stream that ends before ``data: [DONE]`` raises ModelError: its answer is incomplete."""
        body = self._body(prompt, variant, settings, stream=True)
        started = time.perf_counter()
        first = None
        text, usage = [], {}
        reply = self._reply("/completions", body, events=True)
        try:
            for line in _lines(reply):
                if not line.startswith("data:"):
                    continue  # blank lines, ": ping" comments, other event fields
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                pieces, event_usage = self._event(data)
                usage = event_usage or usage
                for piece in pieces:
                    if first is None:
                        first = time.perf_counter()
                    text.append(piece)
                    yield piece
            else:
                raise self._error("/completions", f"the stream ended before [DONE] after "
                                                  f"{sum(map(len, text))} characters; the answer is incomplete")
        finally:
            reply.close()
        ended = time.perf_counter()
        out = "".join(text)
        count = partial(count_tokens, self.tokenizer)
        new = int(usage.get("completion_tokens") or count(out))
        seconds = ended - started
        return GenerationResult(text=out, prompt_tokens=int(usage.get("prompt_tokens") or count(prompt)),
                                new_tokens=new, generate_ms=seconds * 1000,
                                first_token_ms=((first or ended) - started) * 1000 if out else 0.0,
                                tokens_per_s=new / seconds if seconds > 0 else 0.0, variant=variant)
