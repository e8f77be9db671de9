"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions and
Anthropic messages wire formats, with scripted faults, for the autointerp
client tests. Not a mock of the SDKs: the SDKs talk to it over TCP.

Faults are consumed one per request from `script` ("ok", "429:<seconds>",
"500", "hang:<seconds>", "garbage"); `down = True` answers 500 to everything.
`requests` records each request's path and JSON body, `headers` its HTTP
headers (names lower-cased); `on_request(n)` is called with the running count
(used to kill a client midway).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def default_responder(prompt: str) -> str:
    return json.dumps(
        {
            "explanation": "token X",
            "classification": 0,
            "classification_reasoning": "all examples fit",
        }
    )


class FakeLLMServer:
    def __init__(self, responder=default_responder, script=None):
        self.responder = responder
        self.script = list(script or [])
        self.requests: list[tuple[str, dict]] = []
        self.headers: list[dict[str, str]] = []
        self.down = False
        self.on_request = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append((self.path, body))
                    server.headers.append(
                        {k.lower(): v for k, v in self.headers.items()}
                    )
                    n = len(server.requests)
                    action = server.script.pop(0) if server.script else "ok"
                    if server.down:
                        action = "500"
                if server.on_request is not None:
                    server.on_request(n)
                server._answer(self, action, body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    def prompts(self) -> list[str]:
        return [body["messages"][-1]["content"] for _, body in self.requests]

    # -- replies ------------------------------------------------------------
    def _send(self, handler, status, payload, headers=None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def _error(self, handler, status, kind, headers=None):
        anthropic = handler.path.endswith("/messages")
        err = {"type": kind, "message": f"fake {status}"}
        payload = {"type": "error", "error": err} if anthropic else {"error": err}
        self._send(handler, status, payload, headers)

    def _answer(self, handler, action, body):
        name, _, arg = action.partition(":")
        if name == "429":
            return self._error(
                handler, 429, "rate_limit_error", {"retry-after": arg or "0"}
            )
        if name == "500":
            return self._error(handler, 500, "api_error")
        if name == "hang":
            time.sleep(float(arg))
        if name == "garbage":
            return self._send(handler, 200, b"{not json")
        prompt = body["messages"][-1]["content"]
        text = self.responder(prompt)
        p, q = len(prompt.split()), len(text.split())
        if handler.path.endswith("/messages"):
            payload = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": p, "output_tokens": q},
            }
        else:
            payload = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": p,
                    "completion_tokens": q,
                    "total_tokens": p + q,
                },
            }
        self._send(handler, 200, payload)
