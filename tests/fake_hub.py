"""A local stand-in for the Hugging Face hub, for huggingface_hub pointed at it through HF_ENDPOINT.

It answers what HfApi, hf_hub_download and snapshot_download (huggingface_hub 2.x) ask for:

- `GET /api/models/{repo}[/revision/{rev}]`: the repo info with its commit `sha`;
- `GET /api/models/{repo}/tree/{rev}`: every file with `size`, `oid` and, for LFS files, `lfs.oid` (sha256);
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: small files with `ETag` (git blob sha1), `X-Repo-Commit` and
  `Content-Length`; LFS files as a 302 to a second server (the "CDN", another origin, so huggingface_hub does
  not follow it on HEAD) with `Location`, `X-Linked-Etag` (sha256) and `X-Linked-Size`;
- `Range: bytes=N-` on downloads (206 with `Content-Range`);
- unknown repos and files as 404 with `X-Error-Code` RepoNotFound / EntryNotFound.

`drop_after(repo, file, n)` makes the next download of that file send n bytes and close the connection; then
the hub answers 503 to everything until `up()`, so the interrupted pull fails instead of reconnecting.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".ckpt", ".onnx", ".msgpack")
API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+)|/tree/([^/]+)(?:/.*)?)?$")
RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
CDN = re.compile(r"^/lfs/([0-9a-f]{64})$")


@dataclass(frozen=True)
class Seen:
    """One request the fake hub received."""

    server: str
    method: str
    path: str
    range: str | None


def git_sha1(data: bytes) -> str:
    """The git blob id of `data` (the hub's ETag for files stored in git)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    """Weights are LFS files (served through the CDN); configs and tokenizers are plain git files."""
    return path.endswith(LFS_SUFFIXES)


class FakeHub:
    """Serves `repos` ({repo id: {path: bytes}}) on 127.0.0.1; use as a context manager."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.commits = {r: hashlib.sha1(r.encode()).hexdigest() for r in repos}
        self.blobs = {
            hashlib.sha256(d).hexdigest(): (r, p) for r, files in repos.items() for p, d in files.items()
        }
        self.seen: list[Seen] = []
        self.drops: dict[tuple[str, str], int] = {}
        self.down = False
        self.lock = threading.Lock()
        self.hub = self._server("hub")
        self.cdn = self._server("cdn")

    @property
    def endpoint(self) -> str:
        """The value for HF_ENDPOINT."""
        return f"http://127.0.0.1:{self.hub.server_port}"

    def drop_after(self, repo: str, path: str, n: int) -> None:
        """The next download of that file sends n bytes and drops the connection; then the hub is down."""
        self.drops[(repo, path)] = n

    def up(self) -> None:
        """Answer requests again after a drop."""
        self.down = False

    def downloads(self, path: str) -> list[Seen]:
        """The GET requests that carried the bytes of `path` (on the hub or the CDN)."""
        sha = {p: s for s, (_, p) in self.blobs.items()}.get(path)
        return [
            s
            for s in self.seen
            if s.method == "GET" and (s.path.endswith("/" + path) or s.path == f"/lfs/{sha}")
        ]

    def _server(self, name: str) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, name))
        server.daemon_threads = True
        return server

    def __enter__(self) -> FakeHub:
        for s in (self.hub, self.cdn):
            threading.Thread(target=s.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()


def _handler(hub: FakeHub, name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake, server_name = hub, name

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub
    server_name: str

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_HEAD(self) -> None:
        """Metadata only."""
        self._route(body=False)

    def do_GET(self) -> None:
        """Metadata and bytes."""
        self._route(body=True)

    def _route(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.fake.lock:
            self.fake.seen.append(Seen(self.server_name, self.command, path, self.headers.get("Range")))
        if self.fake.down:
            return self._send(503, b"", {"X-Error-Message": "the fake hub is down"}, body)
        if self.server_name == "cdn":
            m = CDN.match(path)
            if m and m.group(1) in self.fake.blobs:
                return self._bytes(*self.fake.blobs[m.group(1)], body)
            return self._send(404, b"", {}, body)
        if m := API.match(path):
            return self._api(
                m.group(1), m.group(2) or m.group(3) or "main", tree=m.group(3) is not None, body=body
            )
        if m := RESOLVE.match(path):
            return self._resolve(m.group(1), m.group(2), m.group(3), body)
        self._send(404, b"", {"X-Error-Message": f"no route {path}"}, body)

    def _missing(self, repo: str, rev: str, path: str | None, body: bool) -> bool:
        """Answer 404 when the repo, the revision or the file does not exist; True when it did."""
        if repo not in self.fake.repos:
            self._send(
                404, b"", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, body
            )
        elif rev not in ("main", self.fake.commits[repo]):
            self._send(
                404, b"", {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "no such revision"}, body
            )
        elif path is not None and path not in self.fake.repos[repo]:
            headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
            self._send(404, b"", headers | {"X-Repo-Commit": self.fake.commits[repo]}, body)
        else:
            return False
        return True

    def _api(self, repo: str, rev: str, tree: bool, body: bool) -> None:
        if self._missing(repo, rev, None, body):
            return
        files = self.fake.repos[repo]
        if tree:
            data: object = [_tree_entry(p, d) for p, d in sorted(files.items())]
        else:
            data = {
                "id": repo,
                "sha": self.fake.commits[repo],
                "siblings": [{"rfilename": p} for p in sorted(files)],
            }
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, body)

    def _resolve(self, repo: str, rev: str, path: str, body: bool) -> None:
        if self._missing(repo, rev, path, body):
            return
        data = self.fake.repos[repo][path]
        commit = {"X-Repo-Commit": self.fake.commits[repo]}
        if not is_lfs(path):
            return self._bytes(repo, path, body)
        sha = hashlib.sha256(data).hexdigest()
        self._send(302, b"", commit | {
            "Location": f"http://127.0.0.1:{self.fake.cdn.server_port}/lfs/{sha}",
            "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
            "ETag": f'"{git_sha1(sha.encode())}"',
        }, body)  # fmt: skip

    def _bytes(self, repo: str, path: str, body: bool) -> None:
        """The file's bytes: whole, or from a Range start; a planned drop cuts the body short."""
        data = self.fake.repos[repo][path]
        etag = hashlib.sha256(data).hexdigest() if is_lfs(path) else git_sha1(data)
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": self.fake.commits[repo], "Accept-Ranges": "bytes"}
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(m.group(1)) if m else 0
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        drop = self.fake.drops.pop((repo, path), None) if body else None
        if drop is None:
            return self._send(206 if start else 200, data[start:], headers, body)
        self.send_response(206 if start else 200)
        for k, v in (headers | {"Content-Length": str(len(data) - start)}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data[start : start + drop])
        self.wfile.flush()
        self.fake.down = True
        self.close_connection = True

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for k, v in (headers | {"Content-Length": str(len(data))}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and data:
            self.wfile.write(data)


def _tree_entry(path: str, data: bytes) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}
    if is_lfs(path):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry
