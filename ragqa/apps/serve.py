"""``ragqa serve``: the OpenAI HTTP API over an index and its generator (Starlette on uvicorn), so
any OpenAI client, Open WebUI or an editor plugin can ask your documents.

- ``GET /v1/models`` (and ``/v1/models/{id}``): the base model and every variant of it, a
  variant's id being its name; each also as ``plain/<id>`` (no retrieval, see below).
- ``POST /v1/chat/completions``, streamed (server-sent events) or not. The last user message is
  answered from the index; earlier user/assistant turns are the history a follow-up is rewritten
  with (``RagQA.stream``). ``model`` picks the variant; ``max_tokens`` (or
  ``max_completion_tokens``), ``temperature`` (0 or absent: greedy), ``top_p``, ``seed`` and
  ``stop`` are honoured; ``usage`` counts the prompt the model read and the tokens it wrote.
  The answer's sources, abstention and timings are in the extension field ``ragqa`` (on the
  last chunk of a stream), which plain clients ignore.
- **Plain mode** (no retrieval; for clients that send their own context): a ``plain/<id>``
  model, or ``"use_context": false`` in the body (PrivateGPT's name). The messages, system
  ones included, go to the model through its chat template. ``response_format`` (``json_object``
  or ``json_schema``) constrains decoding to JSON (``generators.constrained``) in this mode.
- ``GET /health``. Errors have OpenAI's shape ``{"error": {"message", "type", "param",
  "code"}}`` and status codes (400 bad request, 401 key, 404 model or path, 413 too large,
  503 busy with ``Retry-After``, 500 the model failed).
- One generator (one base model) in memory. Generation runs one request at a time (the
  generator's lock); up to ``max_queue`` more wait their turn; beyond that a request gets 503
  with ``Retry-After`` (seconds: the recent mean request time x requests ahead). A client that
  disconnects stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragqa.errors import ConfigError, IndexCorrupt, ModelError, RagqaError

DEFAULT_PORT = 8000
DEFAULT_MAX_REQUEST_BYTES = 1 << 20  # 1 MiB: far more than any chat; a bigger body is refused
DEFAULT_MAX_QUEUE = 8
PLAIN = "plain/"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


# --------------------------------------------------------------------------- the request


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        kinds = {p.type for p in self.content} - {"text"}
        if kinds:
            raise ConfigError(f"messages: content of type {', '.join(sorted(kinds))} is not supported; "
                              "the model reads text only")
        return "".join(p.text or "" for p in self.content)


class _ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _RagqaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int | None = Field(default=None, ge=1, le=50)
    mode: Literal["dense", "bm25", "hybrid"] | None = None


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request ragqa reads (others are accepted and have no
    effect: ``user``, ``logprobs``, penalties, ...)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    response_format: _ResponseFormat | None = None
    tools: list | None = None
    use_context: bool = True  # PrivateGPT's switch: false = plain mode
    ragqa: _RagqaOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("give at most 4 stop strings")
        return [s for s in stops if s]

    def generation(self) -> dict:
        """Per-request GenerationSettings overrides (None: the server's setting)."""
        sampling = bool(self.temperature)
        return {"max_new_tokens": self.max_completion_tokens or self.max_tokens, "do_sample": sampling,
                "temperature": self.temperature if sampling else None,
                "top_p": self.top_p if sampling else None, "seed": self.seed}


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error the client gets in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def api_error(exc: BaseException) -> ApiError:
    """The ApiError a failure becomes (a library error keeps its one-line message)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return ApiError(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")), param=where or None)
    if isinstance(exc, ConfigError):
        code = "context_length_exceeded" if "reads at most" in str(exc) else None
        return ApiError(400, str(exc), code=code)
    if isinstance(exc, ModelError) and "no variant" in str(exc):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, (ModelError, IndexCorrupt, RagqaError)):
        return ApiError(500, str(exc), type="server_error")
    return ApiError(500, f"{type(exc).__name__}: {exc}", type="server_error")


# --------------------------------------------------------------------------- admission


class Admission:
    """At most ``1 + max_queue`` requests in the server (one generating, the rest waiting on the
    generator's lock); the next gets 503 with Retry-After from the recent mean request time."""

    def __init__(self, max_queue: int):
        self.limit = 1 + max(0, int(max_queue))
        self.active = 0
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=20)

    def enter(self) -> Callable[[], None]:
        """Admit a request (or raise 503); returns its release, which may be called more than once."""
        with self._lock:
            if self.active >= self.limit:
                mean = sum(self._recent) / len(self._recent) if self._recent else 5.0
                wait = max(1, math.ceil(mean * self.active))
                raise ApiError(503, f"the server is busy (1 request answering, {self.active - 1} waiting);"
                               f" retry in about {wait} s",
                               type="server_error", code="server_busy", headers={"Retry-After": str(wait)})
            self.active += 1
        started = time.perf_counter()
        done = []

        def release() -> None:
            with self._lock:
                if done:
                    return
                done.append(True)
                self.active -= 1
                self._recent.append(time.perf_counter() - started)

        return release


# --------------------------------------------------------------------------- answering


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Server:
    """The API over one ``RagQA`` (an index and its generator)."""

    def __init__(self, qa, *, api_key: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_queue: int = DEFAULT_MAX_QUEUE):
        self.qa = qa
        self.api_key = api_key or None
        self.max_request_bytes = int(max_request_bytes)
        self.admission = Admission(max_queue)
        self.created = int(time.time())

    # --- models ----------------------------------------------------------------------
    @property
    def base_name(self) -> str:
        return str(getattr(self.qa.generator, "model_name", "base"))

    def model_ids(self, variants: list[dict] | None = None) -> list[str]:
        """The base model, its variants (read from disk now: a new one is served without a
        restart), then each as ``plain/<id>``."""
        variants = self.qa.variants() if variants is None else variants
        names = [self.base_name] + [v["name"] for v in variants if v["name"] != "base"]
        return names + [PLAIN + n for n in names]

    def resolve(self, model: str) -> tuple[str, bool]:
        """(variant, plain?) for a request's ``model``; 404 for one this server does not have."""
        plain = model.startswith(PLAIN)
        name = model[len(PLAIN):] if plain else model
        variant = "base" if name in ("base", self.base_name) else name
        variants = self.qa.variants()
        if variant not in {v["name"] for v in variants}:
            raise ApiError(404, f"the model {model!r} does not exist here; this server has "
                           f"{', '.join(self.model_ids(variants))} (GET /v1/models)", param="model",
                           code="model_not_found")
        return variant, plain

    def model_card(self, model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "ragqa"}

    # --- one completion, as events ---------------------------------------------------
    def plan(self, req: ChatRequest) -> dict:
        """Everything a request is checked for before it is queued (so a stream gets its 400 or
        404 as a status, not as an event): the variant, the mode, the schema, the messages."""
        if req.n not in (None, 1):
            raise ApiError(400, "n: only one choice per request is generated; give n=1", param="n")
        if req.tools:
            raise ApiError(400, "tools: tool calling is not supported by this server", param="tools")
        variant, plain = self.resolve(req.model)
        plain = plain or not req.use_context
        schema = self._schema(req, plain)
        try:
            messages = [(m.role, m.text()) for m in req.messages]
        except ConfigError as exc:
            raise ApiError(400, str(exc), param="messages") from exc
        if not plain:
            if messages[-1][0] != "user":
                raise ApiError(400, "messages: the last message must be the user's question",
                               param="messages")
            if not messages[-1][1].strip():
                raise ApiError(400, "messages: the question is empty", param="messages")
        return {"variant": variant, "plain": plain, "schema": schema, "messages": messages}

    def events(self, req: ChatRequest, plan: dict) -> Iterator[tuple[str, Any]]:
        """("text", piece) as the answer is written, then ("done", summary): finish_reason,
        usage and the ragqa extension. Runs in a worker thread."""
        if plan["plain"]:
            yield from self._plain(plan["messages"], plan["variant"], req, plan["schema"])
        else:
            yield from self._rag(plan["messages"], plan["variant"], req)

    def _schema(self, req: ChatRequest, plain: bool) -> dict | None:
        fmt = req.response_format
        if fmt is None or fmt.type == "text":
            return None
        if not plain:
            raise ApiError(400, "response_format: JSON output is for plain mode (model plain/<id> or "
                           "use_context=false); answers from the index are text with citations",
                           param="response_format")
        if fmt.type == "json_object":
            return {"type": "object"}
        spec = fmt.json_schema or {}
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema: give the JSON schema object",
                           param="response_format")
        return schema

    def _plain(self, messages, variant, req: ChatRequest, schema):
        from ragqa.answering.prompting import render
        from ragqa.generators.constrained import with_schema_instruction
        from ragqa.generators.protocol import count_tokens
        from ragqa.generators.stopping import cut_stream

        chat = [{"role": "system" if role == "developer" else role, "content": text} for role, text in messages]
        if schema is not None:
            chat = with_schema_instruction(chat, schema)
        gen = self.qa.generator
        prompt = render(chat, gen.tokenizer)
        settings = self.qa.generation_for(None, json_schema=schema, **req.generation())
        started = time.perf_counter()
        pieces = cut_stream(gen.stream(prompt, variant=variant, settings=settings), req.stop)
        text = []
        try:
            while True:
                try:
                    piece = next(pieces)
                except StopIteration as end:
                    result, stopped = end.value.result, end.value.stopped
                    break
                text.append(piece)
                yield "text", piece
        finally:
            pieces.close()
        prompt_tokens = getattr(result, "prompt_tokens", None) or count_tokens(gen.tokenizer, prompt)
        new_tokens = getattr(result, "new_tokens", None)
        if new_tokens is None:  # cut by a stop string (the stream was closed), or a generator that
            new_tokens = count_tokens(gen.tokenizer, "".join(text))  # returns nothing
        timings = result.timings() if hasattr(result, "timings") else {
            "generate_ms": round(1000 * (time.perf_counter() - started), 1)}
        yield "done", {"finish_reason": _finish(stopped, new_tokens, settings.max_new_tokens),
                       "usage": _usage(prompt_tokens, new_tokens),
                       "ragqa": {"variant": variant, "mode": "plain", "timings": timings}}

    def _rag(self, messages, variant, req: ChatRequest):
        question = messages[-1][1]
        history, pending = [], None
        for role, text in messages[:-1]:
            if role == "user":
                pending = text
            elif role == "assistant" and pending is not None:
                history.append((pending, text))
                pending = None
        opts = req.ragqa or _RagqaOptions()
        cap = req.generation()["max_new_tokens"] or self.qa.settings.max_new_tokens
        streamed = []
        answer = None
        for item in self.qa.stream(question, variant=variant, history=history, k=opts.k, mode=opts.mode,
                                   stop=req.stop, **req.generation()):
            if isinstance(item, str):
                streamed.append(item)
                yield "text", item
            else:
                answer = item
        written = "".join(streamed).strip()
        if answer.text != written and answer.text.startswith(written):
            yield "text", answer.text[len(written):]  # the citation ragqa added (auto_cited)
        t = answer.timings
        new_tokens = int(t.get("new_tokens", 0))  # none when it abstained without asking the model
        extension = answer.to_json()
        extension.pop("question", None)
        extension.pop("answer", None)
        yield "done", {"finish_reason": _finish(False, new_tokens, cap),
                       "usage": _usage(int(t.get("prompt_tokens", 0)) if new_tokens else 0, new_tokens),
                       "ragqa": {"mode": "rag", **extension}}


def _finish(stopped: bool, new_tokens: int, cap: int) -> str:
    return "length" if not stopped and new_tokens >= cap else "stop"


def _usage(prompt_tokens: int, new_tokens: int) -> dict:
    return {"prompt_tokens": int(prompt_tokens), "completion_tokens": int(new_tokens),
            "total_tokens": int(prompt_tokens + new_tokens)}


# --------------------------------------------------------------------------- the ASGI app


async def _pump(make: Callable[[], Iterator], cancel: threading.Event):
    """The items of ``make()`` (a blocking iterator run in its own thread) as an async stream;
    leaving early (client gone) sets ``cancel``: the thread closes the iterator at its next item,
    which stops the generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def put(kind, value):
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is gone (server stopping)
            pass

    def work():
        it = None
        try:
            it = make()
            for item in it:
                if cancel.is_set():
                    break
                put("item", item)
        except BaseException as exc:  # noqa: BLE001 - handed to the request
            put("error", exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            put("end", None)

    threading.Thread(target=work, name="ragqa-serve", daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        cancel.set()


def create_app(server: Server):
    """The Starlette app for ``server``."""
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    def error_response(err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    def check_key(request: Request) -> None:
        if server.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if given != f"Bearer {server.api_key}":
            raise ApiError(401, "incorrect or missing API key; send the header 'Authorization: Bearer KEY'"
                           " with the key the server was started with", code="invalid_api_key")

    async def read_json(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > server.max_request_bytes:
            raise _too_large(int(declared))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > server.max_request_bytes:
                raise _too_large(len(body))
        try:
            data = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return data

    def _too_large(size: int) -> ApiError:
        return ApiError(413, f"the request is {size:,} bytes; this server takes at most "
                        f"{server.max_request_bytes:,} (ragqa serve --max-request-bytes)", code="request_too_large")

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": server.base_name,
                             "index": str(getattr(server.qa.index, "directory", "")),
                             "active_requests": server.admission.active})

    async def models(request: Request):
        check_key(request)
        return JSONResponse({"object": "list", "data": [server.model_card(m) for m in server.model_ids()]})

    async def model(request: Request):
        check_key(request)
        model_id = request.path_params["model_id"]
        if model_id not in server.model_ids():
            raise ApiError(404, f"the model {model_id!r} does not exist here (GET /v1/models)",
                           param="model", code="model_not_found")
        return JSONResponse(server.model_card(model_id))

    async def chat(request: Request):
        check_key(request)
        try:
            req = ChatRequest.model_validate(await read_json(request))
        except ValidationError as exc:
            raise api_error(exc) from exc
        plan = server.plan(req)  # 400 / 404 before anything is queued
        release = server.admission.enter()
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        cancel = threading.Event()
        events = _pump(lambda: server.events(req, plan), cancel)
        if not req.stream:
            try:
                text, done = [], {}
                async for kind, value in events:
                    if kind == "text":
                        text.append(value)
                    else:
                        done = value
            except Exception as exc:  # noqa: BLE001
                raise api_error(exc) from exc
            finally:
                release()
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                             "finish_reason": done["finish_reason"], "logprobs": None}],
                "usage": done["usage"], "ragqa": done["ragqa"]})

        def event(choices: list, **extra) -> str:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                    "choices": choices, **extra}
            return f"data: {json.dumps(body)}\n\n"

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            return event([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra)

        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        async def sse():
            try:
                yield chunk({"role": "assistant", "content": ""})
                async for kind, value in events:
                    if kind == "text":
                        yield chunk({"content": value})
                    else:
                        yield chunk({}, value["finish_reason"], ragqa=value["ragqa"])
                        if include_usage:
                            yield event([], usage=value["usage"])
            except Exception as exc:  # noqa: BLE001 - the status line is sent: the error is an event
                yield f"data: {json.dumps(api_error(exc).body())}\n\n"
            finally:
                release()
            yield "data: [DONE]\n\n"

        # a client gone before the stream started never runs sse(): the background task releases
        return StreamingResponse(sse(), media_type="text/event-stream", background=BackgroundTask(release),
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def on_api_error(request: Request, exc: ApiError):
        return error_response(exc)

    async def on_http_error(request: Request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                       code=kind))

    async def on_error(request: Request, exc: Exception):
        return error_response(api_error(exc))

    routes = [Route("/health", health, methods=["GET"]),
              Route("/v1/models", models, methods=["GET"]),
              Route("/v1/models/{model_id:path}", model, methods=["GET"]),
              Route("/v1/chat/completions", chat, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={ApiError: on_api_error, HTTPException: on_http_error,
                                                        Exception: on_error})


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key."""
    if not api_key and not is_loopback(host):
        raise ConfigError(f"--host {host} is reachable from other machines; give --api-key KEY (or env "
                          "RAGQA_API_KEY) to serve there, or keep the default 127.0.0.1")


def run(qa, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, api_key: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, max_queue: int = DEFAULT_MAX_QUEUE,
        log_level: str = "info", ready: Callable[[str], None] | None = None) -> None:
    """Serve until stopped (Ctrl-C or SIGTERM)."""
    import uvicorn

    check_bind(host, api_key)
    app = create_app(Server(qa, api_key=api_key, max_request_bytes=max_request_bytes, max_queue=max_queue))
    if ready is not None:
        ready(f"http://{host}:{port}/v1")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
