"""A small Hugging Face Hub look-alike on 127.0.0.1, for testing the real huggingface_hub client.

It serves the few endpoints `model_info`, `list_repo_tree` and `hf_hub_download` use, with the
headers and error codes the real hub sends, so the client raises its real exception classes.
Faults (dropped connections, corrupted bytes, HTTP errors) can be injected per file or globally,
and every request is recorded so a test can say exactly what went over the wire.

    with FakeHub() as hub:
        hub.add_repo("org/model-GGUF", {"model.gguf": path_or_bytes})
        hub.drop_after(1_000_000, file="model.gguf")   # next GET of it stops after 1 MB
        ...
        assert hub.requests_for("model.gguf", method="GET")[1].range == "bytes=1000000-"
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024
# Like a default .gitattributes: small text files live in git, everything else in LFS.
NON_LFS_SUFFIXES = (".md", ".json", ".txt", ".gitattributes")

# (status, X-Error-Code, message) as the hub sends them; huggingface_hub keys its exceptions on these.
ERRORS = {
    "unauthorized": (401, None, "Invalid credentials in Authorization header"),
    "gated": (
        403,
        "GatedRepo",
        "Access to model {repo} is restricted and you are not in the authorized list. "
        "Visit https://huggingface.co/{repo} to ask for access.",
    ),
    "repo_not_found": (404, "RepoNotFound", "Repository not found"),
    "entry_not_found": (404, "EntryNotFound", "Entry not found"),
    "server_error": (500, None, "Internal Error - We're working hard to fix this as soon as possible!"),
}


@dataclass
class HubFile:
    name: str
    source: Path | bytes
    size: int
    sha256: str
    git_oid: str  # git blob sha1 of the content (non-LFS) or of the LFS pointer (LFS)
    lfs: bool

    def open(self):
        return io.BytesIO(self.source) if isinstance(self.source, bytes) else open(self.source, "rb")

    def read_range(self, start: int, end: int):
        """Yield the bytes start..end (inclusive) in chunks; files on disk are streamed, never loaded whole."""
        with self.open() as f:
            f.seek(start)
            left = end + 1 - start
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk


@dataclass
class HubRepo:
    repo_id: str
    commit: str
    files: dict[str, HubFile]
    gated: bool = False
    authorized_tokens: frozenset[str] = frozenset()


@dataclass
class Fault:
    kind: str  # "error", "drop" or "corrupt"
    repo: str | None = None  # None: any repo
    file: str | None = None  # None: any request (error) / any file download (drop, corrupt)
    times: int | None = None  # None: forever; else how many requests it still hits
    status: int = 500
    code: str | None = None
    message: str = ""
    after_bytes: int = 0  # for "drop": body bytes sent before the connection is cut

    def matches(self, repo: str | None, file: str | None) -> bool:
        return (self.repo is None or self.repo == repo) and (self.file is None or self.file == file)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    repo: str | None = None
    file: str | None = None
    status: int = 0
    body_bytes: int = 0  # body bytes actually written to the socket
    fault: str | None = None

    @property
    def range(self) -> str | None:
        return self.headers.get("range")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _describe(name: str, source: Path | bytes, lfs: bool | None) -> HubFile:
    source = source if isinstance(source, bytes) else Path(source)
    file = HubFile(name, source, 0, "", "", lfs if lfs is not None else not name.endswith(NON_LFS_SUFFIXES))
    with file.open() as f:
        file.sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        file.size = f.seek(0, io.SEEK_END)
    if file.lfs:  # git stores a pointer file; its sha1 is the blob id the API reports
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{file.sha256}\nsize {file.size}\n"
        file.git_oid = _git_blob_sha1(pointer.encode())
    else:
        with file.open() as f:
            file.git_oid = _git_blob_sha1(f.read())
    return file


class FakeHub:
    """A hub-compatible HTTP server on 127.0.0.1 (port chosen by the OS). Use as a context manager."""

    def __init__(self, *, redirect_lfs: bool = False, valid_tokens: tuple[str, ...] = ("hf_valid_test_token",)):
        # redirect_lfs: answer /resolve of LFS files with a 302 to a CDN-like URL on this server, as the hub does.
        self.redirect_lfs = redirect_lfs
        self.valid_tokens = set(valid_tokens)
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        # Networks that are not the hub (set by tests): a captive portal answers every request with a
        # login page; a hijacked API redirects to another host; a broken or hostile mirror lists extra
        # siblings (names that climb out of the repo, absurd sizes).
        self.captive_portal = False
        self.api_redirect_host: str | None = None
        self.extra_siblings: dict[str, list[dict]] = {}
        self.raw_model_info: dict[str, bytes] = {}  # repo -> the exact model_info body to send (fuzzing)
        self._in_flight = 0  # requests being handled, not yet in the log
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})  # each server sees its own hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)  # quick shutdown
        self._thread = threading.Thread(target=serve, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "use FakeHub as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- content ---------------------------------------------------------------------------
    def add_repo(
        self, repo_id: str, files: dict[str, Path | bytes], commit: str | None = None, *,
        gated: bool = False, authorized_tokens: tuple[str, ...] = (), lfs: bool | None = None,
    ) -> HubRepo:  # fmt: skip
        """Serve `files` under `repo_id` at `commit` (derived from the content when None) and at "main".

        gated: only `authorized_tokens` may read it. lfs: force every file in or out of LFS
        (default: like a usual .gitattributes, small text files in git, the rest in LFS).
        """
        described = {name: _describe(name, src, lfs) for name, src in files.items()}
        if commit is None:
            seed = repo_id + "".join(f"{f.name}:{f.sha256}" for f in described.values())
            commit = hashlib.sha1(seed.encode()).hexdigest()
        repo = HubRepo(repo_id, commit, described, gated, frozenset(authorized_tokens))
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    # ---- fault injection -------------------------------------------------------------------
    def fail(self, kind: str, *, repo: str | None = None, file: str | None = None, times: int | None = None) -> None:
        """Answer matching requests with a hub error from ERRORS (e.g. "gated", "server_error").

        With `file`, only downloads (HEAD/GET /resolve) of that file fail; without it, every request
        to the repo (or to any repo) does, API calls included. `times=1` is a one-shot fault.
        """
        status, code, message = ERRORS[kind]
        self._faults.append(Fault("error", repo, file, times, status=status, code=code, message=message))

    def drop_after(self, nbytes: int, *, repo: str | None = None, file: str | None = None, times: int | None = 1):
        """Cut the connection after `nbytes` body bytes of the next matching GET(s)."""
        self._faults.append(Fault("drop", repo, file, times, after_bytes=nbytes))

    def corrupt(self, *, repo: str | None = None, file: str | None = None, times: int | None = None) -> None:
        """Serve matching GETs with the right length and headers but wrong bytes."""
        self._faults.append(Fault("corrupt", repo, file, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, kinds: tuple[str, ...], repo: str | None, file: str | None) -> Fault | None:
        """The first matching fault, with one use consumed (so one-shot faults heal by themselves)."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.matches(repo, file) and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # ---- request log -----------------------------------------------------------------------
    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)
            self._in_flight -= 1

    def requests_for(self, file: str | None = None, *, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally only the downloads (/resolve) of `file` and/or one method.

        A client can finish (or give up) before the server thread has recorded its request: wait
        for handlers still running, so a test never reads the log half written."""
        deadline = time.monotonic() + 5
        while self._in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            reqs = list(self.requests)
        return [r for r in reqs if (file is None or r.file == file) and (method is None or r.method == method)]

    def bytes_served(self, file: str) -> int:
        return sum(r.body_bytes for r in self.requests_for(file, method="GET"))

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<what>revision|tree)/(?P<rev>[^/]+)(?:/(?P<sub>.*))?)?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_LFS = re.compile(r"^/_lfs/(?P<repo>[^/]+/[^/]+)/(?P<rev>[0-9a-f]{40})/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive + Content-Length, like the real hub

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self):
        self._handle()

    do_HEAD = do_GET

    # ---- dispatch --------------------------------------------------------------------------
    def _handle(self) -> None:
        path = urlsplit(self.path).path
        self.rec = RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        with self.hub._lock:
            self.hub._in_flight += 1
        try:
            if self.hub.captive_portal:
                self._portal()
            elif self.hub.api_redirect_host and _API.match(path):
                port = self.hub.endpoint.rsplit(":", 1)[1]
                location = f"http://{self.hub.api_redirect_host}:{port}{self.path}"
                self._send(302, {"Location": location, "Content-Length": "0"})
            elif m := _API.match(path):
                self._api(unquote(m["repo"]), m["what"], unquote(m["rev"] or "main"), unquote(m["sub"] or ""))
            elif m := (_RESOLVE.match(path) or _LFS.match(path)):
                cdn = path.startswith("/_lfs/")
                self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"]), via_cdn=cdn)
            else:
                self._error(404, None, "Not Found")
        finally:
            self.hub._record(self.rec)

    def _gate(self, repo_id: str, file: str | None) -> HubRepo | None:
        """Apply injected errors, tokens and gating the way the hub does; None if an error was sent."""
        self.rec.repo, self.rec.file = repo_id, file
        if fault := self.hub._take_fault(("error",), repo_id, file):
            self._error(fault.status, fault.code, fault.message.format(repo=repo_id), fault="error")
            return None
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip() or None
        if token is not None and token not in self.hub.valid_tokens:
            self._error(*ERRORS["unauthorized"])
            return None
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            # The hub answers 401 to anonymous callers so as not to reveal whether a private repo exists.
            status = 404 if token else 401
            self._error(status, "RepoNotFound", "Repository not found")
            return None
        if repo.gated and token not in repo.authorized_tokens:
            status = 403 if token else 401
            self._error(status, "GatedRepo", ERRORS["gated"][2].format(repo=repo_id))
            return None
        return repo

    # ---- /api/models -----------------------------------------------------------------------
    def _api(self, repo_id: str, what: str | None, rev: str, sub: str | None) -> None:
        if what is None and repo_id in self.hub.raw_model_info:
            body = self.hub.raw_model_info[repo_id]
            self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
            self._write(body)
            return
        repo = self._gate(repo_id, None)
        if repo is None:
            return
        if rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if what == "tree":  # one page, no folders: enough for flat GGUF repos
            body = [self._tree_entry(f) for f in repo.files.values() if not sub or f.name.startswith(sub + "/")]
        else:  # model_info; sizes and LFS hashes only when asked for (files_metadata=True sends blobs=True)
            blobs = "blobs=true" in urlsplit(self.path).query.lower()
            siblings = [self._sibling(f) if blobs else {"rfilename": f.name} for f in repo.files.values()]
            siblings += self.hub.extra_siblings.get(repo_id, [])
            body = {"_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
                    "lastModified": "2026-01-01T00:00:00.000Z", "private": False, "disabled": False,
                    "gated": "manual" if repo.gated else False, "tags": ["gguf"], "siblings": siblings}  # fmt: skip
        self._json(200, body, {"X-Repo-Commit": repo.commit})

    @staticmethod
    def _sibling(f: HubFile) -> dict:
        out = {"rfilename": f.name, "size": f.size, "blobId": f.git_oid}
        if f.lfs:
            out["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": 134}
        return out

    @staticmethod
    def _tree_entry(f: HubFile) -> dict:
        out = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.name}
        if f.lfs:
            out["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
        return out

    def _portal(self) -> None:
        """What a hotel or school network answers before you log in: 200 and a web page, for anything."""
        page = b"<!DOCTYPE html><html><head><title>Guest Wi-Fi</title></head><body><form>Log in</form></body></html>"
        self._send(200, {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(page))})
        if self.command != "HEAD":
            self._write(page)

    # ---- /{repo}/resolve/{rev}/{file} ------------------------------------------------------
    def _resolve(self, repo_id: str, rev: str, name: str, *, via_cdn: bool) -> None:
        repo = self._gate(repo_id, name)
        if repo is None:
            return
        if rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        f = repo.files.get(name)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", extra={"X-Repo-Commit": repo.commit})
            return
        etag = f.sha256 if f.lfs else f.git_oid
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        if f.lfs:
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)}
        if f.lfs and self.hub.redirect_lfs and not via_cdn:
            headers["Location"] = f"{self.hub.endpoint}/_lfs/{repo_id}/{repo.commit}/{name}"
            self._send(302, headers | {"Content-Length": "0"})
            return
        self._send_file(f, headers)

    def _send_file(self, f: HubFile, headers: dict[str, str]) -> None:
        start, end = 0, f.size - 1
        status = 200
        if self.rec.range and (m := _RANGE.match(self.rec.range.strip())):
            lo, hi = m.groups()
            if lo == "":  # suffix range: the last N bytes
                start, end = max(f.size - int(hi or 0), 0), f.size - 1
            else:
                start, end = int(lo), min(int(hi), f.size - 1) if hi else f.size - 1
            if start >= f.size or start > end:
                self._send(416, headers | {"Content-Range": f"bytes */{f.size}", "Content-Length": "0"})
                return
            status = 206
            headers = headers | {"Content-Range": f"bytes {start}-{end}/{f.size}"}
        self._send(status, headers | {"Content-Length": str(end - start + 1)})
        if self.command == "HEAD":
            return

        drop = self.hub._take_fault(("drop",), self.rec.repo, f.name)
        corrupt = self.hub._take_fault(("corrupt",), self.rec.repo, f.name)
        self.rec.fault = "drop" if drop else "corrupt" if corrupt else None
        budget = drop.after_bytes if drop else None
        for chunk in f.read_range(start, end):
            if corrupt:
                chunk = bytes(reversed(chunk))  # same length, wrong order
            if budget is not None and len(chunk) >= budget:
                self._write(chunk[:budget])
                self._cut()
                return
            self._write(chunk)
            if budget is not None:
                budget -= len(chunk)

    # ---- low level -------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.rec.body_bytes += len(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _cut(self) -> None:
        """Drop the connection mid-body, like a flaky network: the client sees a short read."""
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, headers: dict[str, str]) -> None:
        self.rec.status = status
        self.send_response(status)
        self.send_header("X-Request-Id", f"fake-{id(self.rec):x}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _json(self, status: int, body, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self._send(status, (headers or {}) | {"Content-Type": "application/json", "Content-Length": str(len(data))})
        if self.command != "HEAD":
            self._write(data)

    def _error(self, status: int, code: str | None, message: str, *, extra: dict | None = None, fault=None) -> None:
        self.rec.fault = fault
        headers = {"X-Error-Message": message} | (extra or {})
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)
