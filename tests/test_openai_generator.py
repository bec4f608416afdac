"""The OpenAI-compatible generator against a small local fake of vLLM's API (http.server in a
thread): the variant goes out as the request's model, streaming works, and errors are one line."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ragqa import Index, ModelError
from ragqa.generators import GenerationSettings
from ragqa.generators.openai_client import OpenAIGenerator
from ragqa.pipeline import RagQA, make_generator

MODELS = [{"id": "Qwen/Qwen2.5-0.5B-Instruct", "object": "model", "root": "Qwen/Qwen2.5-0.5B-Instruct",
           "parent": None, "max_model_len": 4096},
          {"id": "squad-lora", "object": "model", "root": "adapters/squad-lora", "parent": "Qwen/Qwen2.5-0.5B-Instruct"}]


class FakeVLLM(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args):
        pass

    def _json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": MODELS})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeVLLM.requests.append({**body, "auth": self.headers.get("Authorization")})
        if self.path != "/v1/completions":
            return self._json(404, {"error": {"message": "not found"}})
        if body["model"] not in {m["id"] for m in MODELS}:
            return self._json(404, {"error": {"message": f"The model `{body['model']}` does not exist."}})
        words = f"Answer from {body['model']} [1]".split(" ")[: body["max_tokens"]]
        if not body.get("stream"):
            return self._json(200, {"choices": [{"text": " ".join(words), "index": 0}],
                                    "usage": {"prompt_tokens": 7, "completion_tokens": len(words)}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, w in enumerate(words):
            event = {"choices": [{"text": (w if i == 0 else " " + w), "index": 0}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(words)}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def server():
    FakeVLLM.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLLM)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_variant_is_the_request_model(server):
    gen = OpenAIGenerator(server + "/v1", tokenizer="fake")
    out = gen.generate("Question?", variant="squad-lora", settings=GenerationSettings(max_new_tokens=10))
    assert out.text == "Answer from squad-lora [1]" and out.new_tokens == 4 and out.prompt_tokens == 7
    assert out.variant == "squad-lora" and out.generate_ms > 0
    base = gen.generate("Question?")
    assert base.text.startswith("Answer from Qwen/Qwen2.5-0.5B-Instruct")
    req = FakeVLLM.requests[0]
    assert req["model"] == "squad-lora" and req["prompt"] == "Question?" and req["max_tokens"] == 10
    assert req["temperature"] == 0.0 and req["repetition_penalty"] == 1.1 and req["stream"] is True
    assert gen.context_length == 4096
    names = {v["name"]: v for v in gen.variants()}
    assert set(names) == {"base", "squad-lora"} and names["squad-lora"]["kind"] == "lora"


def test_stream_pieces_join_to_the_text(server):
    gen = OpenAIGenerator(server, tokenizer="fake", api_key="secret")  # /v1 is added
    pieces = list(gen.stream("Q", variant="squad-lora"))
    assert "".join(pieces) == "Answer from squad-lora [1]" and len(pieces) == 4
    assert FakeVLLM.requests[-1]["auth"] == "Bearer secret"


def test_pipeline_answers_through_the_server(tmp_path, corpus, settings, server):
    Index.build([corpus], tmp_path / "idx", settings)
    s = settings.replace(model=f"openai:{server}/v1", generator_tokenizer="fake", abstain_threshold=0.0)
    gen = make_generator(s)
    assert isinstance(gen, OpenAIGenerator)
    with RagQA.open(tmp_path / "idx", s) as qa:
        answer = qa.ask("What orbits the earth?", variant="squad-lora")
        assert answer.text == "Answer from squad-lora [1]" and answer.sources[0].cited
        assert answer.timings["new_tokens"] == 4
        streamed = list(qa.stream("What orbits the earth?", variant="base"))
        assert streamed[-1].text.startswith("Answer from Qwen") and isinstance(streamed[0], str)
    assert "passage" in FakeVLLM.requests[0]["prompt"].lower() or "[1]" in FakeVLLM.requests[0]["prompt"]


def test_errors_are_one_line(server):
    gen = OpenAIGenerator(server, tokenizer="fake")
    with pytest.raises(ModelError, match="HTTP 404.*does not exist.*serves Qwen/Qwen2.5-0.5B-Instruct, squad-lora"):
        gen.generate("Q", variant="nope")
    down = OpenAIGenerator("http://127.0.0.1:9", tokenizer="fake", timeout=2)
    with pytest.raises(ModelError, match="cannot connect"):
        down.generate("Q")
    with pytest.raises(Exception, match="give the server's URL"):
        OpenAIGenerator("localhost:8000", tokenizer="fake")
