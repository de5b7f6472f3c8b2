"""A Hugging Face hub served on 127.0.0.1 by the standard library, for the download tests.

It implements what huggingface_hub (2.x) and transformers ask of the hub, and no more:
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: rev a branch, tag or 40-hex commit (percent-encoded,
  ``/`` included); answers carry ``X-Repo-Commit``, ``ETag`` and ``Content-Length``; large (LFS)
  files also ``X-Linked-Etag`` (their sha256) and ``X-Linked-Size``, and a 302 to ``/_blobs/{sha256}``
  on a second port (a storage host: another origin, as the hub's CDN is, so the client stops at the
  302 and reads the metadata from it).
- ``GET /api/models/{repo}[/revision/{rev}]``: ``id``, ``sha``, ``siblings``, ``gated``, ``private``.
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``recursive`` or not; LFS files with their ``lfs``
  block); a missing folder is a 404 with ``X-Error-Code: EntryNotFound``.
- ``GET /api/models/{repo}/refs``: ``branches``, ``tags``, ``converts``, each with ``targetCommit``.
Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
``GatedRepo``). A gated repository answers its files only to ``Authorization: Bearer <token>``
with the hub's `token`; a private one is not found without it. `drop_after[path]` = n closes the
connection after n bytes of that file (a connection lost mid-download), on every try.
Every request is logged in `requests` (method, path), so a test can assert the hub was not asked.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class ServedRepo:
    """One repository: its commits (path -> bytes), branches and tags (name -> commit)."""

    name: str
    gated: bool = False
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        return rev if rev in self.commits else None


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """The served hub (module docstring): `add(...)` revisions, `start()`, `stop()`."""

    def __init__(self, token: str = "hf_test_token") -> None:
        self.repos: dict[str, ServedRepo] = {}
        self.token = token
        self.drop_after: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.minimal_refs = False  # True: refs answers carry branches and tags only (no "converts")
        self._blobs: dict[str, bytes] = {}
        self._drop_blobs: dict[str, int] = {}  # sha256 -> bytes sent before the connection drops
        self._servers: list[ThreadingHTTPServer] = []

    # ---- content ----------------------------------------------------------------------------
    def add(self, repo: str, branch: str, files: dict[str, bytes] | str | Path, *, gated: bool = False,
            private: bool = False, skip: tuple[str, ...] = ()) -> str:
        """Publish `files` (a dict, or every file of a directory but `skip`) as a new commit on `branch`."""
        if not isinstance(files, dict):
            root = Path(files)
            files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                     if p.is_file() and p.name not in skip}
        served = self.repos.setdefault(repo, ServedRepo(repo, gated=gated, private=private))
        digest = hashlib.sha1(f"{repo}\0{branch}\0{len(served.commits)}".encode())
        for path, data in sorted(files.items()):
            digest.update(path.encode() + hashlib.sha256(data).digest())
        commit = digest.hexdigest()
        served.commits[commit] = dict(files)
        served.branches[branch] = commit
        for data in files.values():
            self._blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    # ---- server -----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._servers, "start() the hub first"
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def storage(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def start(self) -> str:
        """Serve the hub and its storage host on two free ports of 127.0.0.1; returns the hub's address."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        for _ in range(2):
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._servers.append(server)
        return self.endpoint

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # ---- routing ------------------------------------------------------------------------------
    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        self.hub.requests.append((self.command, url.path))
        segments = [unquote(s) for s in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        if segments[:1] == ["_blobs"] and len(segments) == 2:
            return self._blob(segments[1], head)
        if segments[:2] == ["api", "models"]:
            return self._api(segments[2:], query)
        repo, rest = self._split_repo(segments)
        if repo is None or len(rest) < 3 or rest[0] != "resolve":
            return self._error(404, "RepoNotFound", "Repository not found")
        if not self._may_see(repo) or not self._may_read(repo):
            return
        commit = repo.resolve(rest[1])
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
        path = "/".join(rest[2:])
        files = repo.commits[commit]
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} does not exist", commit=commit)
        data = files[path]
        headers = {"X-Repo-Commit": commit, "Content-Length": str(len(data))}
        if path.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            if path in self.hub.drop_after:
                self.hub._drop_blobs[sha] = self.hub.drop_after[path]
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                            "Location": f"{self.hub.storage}/_blobs/{sha}", "Content-Length": "0"})
            return self._send(302, headers, b"")
        headers["ETag"] = f'"{git_blob_sha1(data)}"'
        return self._send(200, headers, b"" if head else data, drop=self.hub.drop_after.get(path))

    def _split_repo(self, segments: list[str]) -> tuple[ServedRepo | None, list[str]]:
        for n in (2, 1):
            name = "/".join(segments[:n])
            if name in self.hub.repos:
                return self.hub.repos[name], segments[n:]
        return None, segments

    def _may_see(self, repo: ServedRepo) -> bool:
        if repo.private and not self._authorized():
            self._error(404, "RepoNotFound", "Repository not found")
            return False
        return True

    def _may_read(self, repo: ServedRepo) -> bool:
        if repo.gated and not self._authorized():
            self._error(401, "GatedRepo", f"Access to model {repo.name} is restricted. You must have access to it "
                                          "and be authenticated to access it. Please log in.")
            return False
        return True

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _api(self, segments: list[str], query: dict) -> None:
        repo, rest = self._split_repo(segments)
        if repo is None or not self._may_see(repo):
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
            return
        if rest == ["refs"]:
            refs = {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()],
                    "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo.tags.items()]}
            if not self.hub.minimal_refs:
                refs["converts"] = []
            return self._json(refs)
        rev = "main"
        if rest[:1] == ["revision"] and len(rest) >= 2:
            rev = "/".join(rest[1:])
        elif rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo, rest[1], "/".join(rest[2:]), "true" in query.get("recursive", []))
        elif rest:
            return self._error(404, "EntryNotFound", "not found")
        commit = repo.resolve(rev)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files = repo.commits[commit]
        return self._json({"id": repo.name, "modelId": repo.name, "sha": commit, "private": repo.private,
                           "gated": "manual" if repo.gated else False, "disabled": False,
                           "siblings": [{"rfilename": p} for p in sorted(files)], "tags": [], "downloads": 0})

    def _tree(self, repo: ServedRepo, rev: str, folder: str, recursive: bool) -> None:
        commit = repo.resolve(rev)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        paths = [p for p in sorted(repo.commits[commit]) if p.startswith(prefix)]
        if prefix and not paths:
            return self._error(404, "EntryNotFound", f"{folder} does not exist on {rev}", commit=commit)
        entries, folders = [], set()
        for path in paths:
            rel = path[len(prefix):]
            if "/" in rel and not recursive:
                folders.add(prefix + rel.split("/")[0])
                continue
            data = repo.commits[commit][path]
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
            if recursive:
                parts = rel.split("/")[:-1]
                folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
        entries += [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0} for f in sorted(folders)]
        return self._json(entries)

    def _blob(self, sha: str, head: bool) -> None:
        data = self.hub._blobs.get(sha)
        if data is None:
            return self._error(404, "EntryNotFound", "no such blob")
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            start = int(ranged[6:].split("-")[0] or 0)
        body = data[start:]
        headers = {"Content-Length": str(len(body)), "ETag": f'"{sha}"', "Accept-Ranges": "bytes"}
        status = 200
        if start:
            status, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
        drop = self.hub._drop_blobs.get(sha)
        if drop is not None:
            drop = max(0, drop - start)
        return self._send(status, headers, b"" if head else body, drop=drop)

    # ---- answers ------------------------------------------------------------------------------
    def _send(self, status: int, headers: dict[str, str], body: bytes, drop: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return  # headers only: a body would be read as the next response on a kept-alive connection
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the connection lost mid-file
            return
        self.wfile.write(body)

    def _json(self, obj) -> None:
        body = json.dumps(obj).encode()
        self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json",
                   "Content-Length": str(len(body))}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, headers, body)


