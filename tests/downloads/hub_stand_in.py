"""A stand-in for the Hugging Face Hub on 127.0.0.1: the endpoints huggingface_hub's downloads call, served from folders.

- `GET /api/models/<repo>/tree/<revision>`: the repo's files with their sizes (`HfApi.list_repo_tree`).
- `HEAD` and `GET /<repo>/resolve/<revision>/<file>`: what `hf_hub_download` checks (`X-Repo-Commit`, an `ETag`
  that is the file's sha256 as the Hub gives for large files, `Content-Length`), and `Range: bytes=N-` answered
  with 206 and `Content-Range`, as huggingface_hub asks when it resumes a broken transfer.
- Unknown repos and files get 404 with the Hub's `X-Error-Code` (`RepoNotFound`, `EntryNotFound`).

`cut[file] = n` makes the next GET of that file send its headers and only n bytes, then drop the connection.
Every request is recorded as (method, file or path, Range header).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<revision>[^/?]+)")


class StandInHub:
    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self, filename: str) -> list[str | None]:
        """The Range header of each GET of `filename` (None: the whole file)."""
        return [range_ for method, name, range_ in self.requests if method == "GET" and name == filename]

    def _answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = request.path.split("?")[0]
        if match := TREE.match(path):
            self.requests.append((request.command, path, None))
            folder = self.repos.get(match["repo"])
            if folder is None:
                return self._send(request, 404, {"X-Error-Code": "RepoNotFound"}, b"")
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            listing = [{"type": "file", "path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
                        "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in files]
            return self._send(request, 200, {"Content-Type": "application/json"}, json.dumps(listing).encode())
        match = RESOLVE.match(path)
        if match is None:
            self.requests.append((request.command, path, None))
            return self._send(request, 404, {}, b"")
        filename, range_ = match["file"], request.headers.get("Range")
        self.requests.append((request.command, filename, range_))
        folder = self.repos.get(match["repo"])
        if folder is None:
            return self._send(request, 404, {"X-Error-Code": "RepoNotFound"}, b"")
        file = folder / filename
        if not file.is_file():
            return self._send(request, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, b"")
        data = file.read_bytes()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        status, start = 200, 0
        if body and range_:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_)[1])
            status, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
        if not body:
            headers["Content-Length"] = str(len(data))
            return self._send(request, 200, headers, b"", length_given=True)
        cut = self.cut.pop(filename, None)
        if cut is not None:  # announce the whole rest, send a part, drop the connection
            headers["Content-Length"] = str(len(data) - start)
            request.send_response(status)
            for key, value in headers.items():
                request.send_header(key, value)
            request.end_headers()
            request.wfile.write(data[start:start + cut])
            request.wfile.flush()
            request.close_connection = True
            return
        self._send(request, status, headers, data[start:])

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes,
              length_given: bool = False) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        if not length_given:
            request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)
