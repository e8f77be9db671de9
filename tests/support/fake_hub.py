"""A local stand-in for the Hugging Face Hub, speaking the HTTP API that
`huggingface_hub.snapshot_download` uses, on 127.0.0.1.

Repos are folders: `FakeHub(repos={"models/Org/Name": dir, "datasets/Org/D":
dir})`; `gated` repos answer 401 without the expected bearer token. Every
request is recorded, so tests can check what was (not) asked.

    with FakeHub(repos) as hub:   # HF_ENDPOINT=hub.url for the code under test
        ...
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path], gated=(), token: str = "hf_test"):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.gated, self.token = set(gated), token
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- routing ---------------------------------------------------------

    def _repo(self, kind: str, parts: list[str]) -> tuple[str, list[str]] | None:
        """(repo key, rest of the path) for `kind` ('models' | 'datasets')."""
        for n in (2, 1):
            key = f"{kind}/" + "/".join(parts[:n])
            if key in self.repos:
                return key, parts[n:]
        return None

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(h.path).path).strip("/")
        self.requests.append((h.command, "/" + path))
        parts = path.split("/")
        if parts[0] == "api" and parts[1] in ("models", "datasets"):
            found = self._repo(parts[1], parts[2:])
            if found is None:
                return self._send(h, 404, {"error": "Repository not found"})
            key, rest = found
            if not self._authorised(h, key):
                return self._send(h, 401, {"error": "gated repo: token required"})
            if not rest or rest[:1] == ["revision"]:
                return self._send(h, 200, self._info(key))
            if rest[:1] == ["tree"]:
                return self._send(h, 200, self._tree(key))
            return self._send(h, 404, {"error": f"no route {path}"})
        kind = "datasets" if parts[0] == "datasets" else "models"
        found = self._repo(kind, parts[1:] if kind == "datasets" else parts)
        if found is None or found[1][:1] != ["resolve"]:
            return self._send(h, 404, {"error": f"no route {path}"})
        key, rest = found
        if not self._authorised(h, key):
            return self._send(h, 401, {"error": "gated repo: token required"})
        file = self.repos[key] / "/".join(rest[2:])
        if not file.is_file():
            return self._send(h, 404, {"error": "Entry not found"})
        data = file.read_bytes()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", COMMIT)
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _authorised(self, h, key: str) -> bool:
        return key not in self.gated or (
            h.headers.get("Authorization") == f"Bearer {self.token}"
        )

    def _files(self, key: str) -> list[Path]:
        root = self.repos[key]
        return sorted(p for p in root.rglob("*") if p.is_file())

    def _info(self, key: str) -> dict:
        root = self.repos[key]
        return {
            "id": key.split("/", 1)[1],
            "sha": COMMIT,
            "siblings": [
                {"rfilename": str(p.relative_to(root))} for p in self._files(key)
            ],
        }

    def _tree(self, key: str) -> list[dict]:
        root = self.repos[key]
        return [
            {
                "type": "file",
                "path": str(p.relative_to(root)),
                "size": p.stat().st_size,
                "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
            }
            for p in self._files(key)
        ]

    @staticmethod
    def _send(h, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if status == 404:
            h.send_header("X-Error-Code", "RepoNotFound")
        h.end_headers()
        h.wfile.write(data)
