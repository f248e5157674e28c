"""A stand-in for the Hugging Face Hub on the loopback: it answers the file requests ``huggingface_hub`` makes
(``HEAD`` and ``GET`` of ``/<repo>/resolve/<revision>/<file>``, with the commit, ETag and size headers), so
downloading code is tested without the internet. Point a command at it with ``HF_ENDPOINT``; every request is
recorded."""

from __future__ import annotations

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SERVED = (
    "test_resnet.r160_in1k"  # a tiny timm model (0.5 M parameters) whose weights timm takes from timm/<name>
)
REPO = f"timm/{SERVED}"


def timm_safetensors(name: str = SERVED, seed: int = 0) -> bytes:
    """A timm model's own (random, seeded) weights as timm names them, as a safetensors file's bytes."""
    import timm
    import torch
    from safetensors.torch import save

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    return save({key: value.contiguous() for key, value in model.state_dict().items()})


class HubStandIn:
    def __init__(self, files: dict[tuple[str, str], bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
                self.answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self.missing("RepoNotFound")
                repo_id, filename = "/".join(parts[:2]), "/".join(parts[4:])
                if not any(repo == repo_id for repo, _ in hub.files):
                    return self.missing("RepoNotFound")
                content = hub.files.get((repo_id, filename))
                if content is None:
                    return self.missing("EntryNotFound")
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("Content-Length", str(len(content)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(content)

            def missing(self, code: str) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def downloads(self) -> int:
        return sum(method == "GET" for method, _ in self.requests)

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def hub_vars(hub: HubStandIn | None, home: Path, offline: bool = False) -> dict[str, str]:
    """The Hub's variables for a command: the stand-in as its endpoint, a cache of the test's own."""
    variables = {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1" if offline else "0",
                 "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}  # fmt: skip
    if hub is not None:
        variables["HF_ENDPOINT"] = hub.endpoint
    return variables


def hub_env(hub: HubStandIn | None, home: Path, offline: bool = False) -> dict[str, str]:
    return {**os.environ, **hub_vars(hub, home, offline)}
