"""A small, real HTTP server that speaks the Hugging Face Hub protocol as huggingface_hub calls it.

Enough for `adapt push/pull` through the real client: whoami, repo create/info, preupload,
NDJSON commits, refs, tags, tree and paths-info, resolve (HEAD/GET with X-Repo-Commit, ETag,
X-Linked-Etag, X-Linked-Size), validate-yaml and the plain LFS batch API (basic transfer).
It keeps everything in memory, counts the file bytes it receives, and can tamper with a stored
blob so tests can check that pulls refuse it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = (b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                 b"*.bin filter=lfs diff=lfs merge=lfs -text\n")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    return text.encode()


@dataclass
class Entry:
    """One file in a commit's tree: regular (git blob id) or LFS (sha256)."""

    size: int
    blob_id: str
    sha256: str | None = None  # set for LFS files


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, Entry]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes: LFS is per repo


@dataclass
class HubState:
    tokens: dict[str, str]  # token -> user name
    orgs: dict[str, set[str]] = field(default_factory=dict)  # org -> member users
    repos: dict[str, Repo] = field(default_factory=dict)
    git: dict[str, bytes] = field(default_factory=dict)  # git blob id -> bytes
    received_file_bytes: int = 0  # LFS PUT bodies + inline regular file contents
    commit_count: int = 0
    fail_resolve: dict[str, int] = field(default_factory=dict)  # "commit/path" -> HTTP status
    requests: list[str] = field(default_factory=list)
    # hostile answers (tests/hostile): "commit" -> the sha/targetCommit to claim, "etag" -> the
    # ETag to send, "size" -> the size every tree entry claims
    hostile: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _serial: int = 0

    def new_commit(self, repo: Repo, files: dict[str, Entry], message: str) -> str:
        self._serial += 1
        sha = hashlib.sha1(f"{repo.repo_id}\0{self._serial}\0{message}".encode()).hexdigest()
        repo.commits[sha] = files
        return sha

    def tamper(self, repo_id: str, revision: str, path: str) -> None:
        """Flip the stored bytes of a file without changing what the server reports for it."""
        repo = self.repos[repo_id]
        entry = repo.commits[resolve_revision(repo, revision)][path]
        store, key = (repo.lfs, entry.sha256) if entry.sha256 else (self.git, entry.blob_id)
        data = bytearray(store[key])
        data[-1] ^= 0xFF
        store[key] = bytes(data)


def resolve_revision(repo: Repo, revision: str) -> str:
    if revision in repo.branches:
        return repo.branches[revision]
    if revision in repo.tags:
        return repo.tags[revision]
    if revision in repo.commits:
        return revision
    raise KeyError(revision)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


_API_REPO = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<op>revision|refs|tag|preupload|commit|tree|paths-info)"
    r"(?:/(?P<rev>[^/]+))?(?P<rest>/.*)?)?$"
)
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_LFS_BATCH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_PUT = re.compile(r"^/_lfs/(?P<repo>[^/]+/[^/]+)/(?P<oid>[0-9a-f]{64})$")


class HubHandler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing --------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        user = self.state.tokens.get(auth[len("Bearer "):])
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_id: str, write: bool = False) -> Repo:
        user = self._user()
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not self._may_write(user, repo_id)):
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write:
            if user is None:
                raise HubError(401, "You must be authenticated to write", None)
            if not self._may_write(user, repo_id):
                raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _may_write(self, user: str | None, repo_id: str) -> bool:
        if user is None:
            return False
        namespace = repo_id.split("/")[0]
        return namespace == user or user in self.state.orgs.get(namespace, set())

    def _commit_of(self, repo: Repo, rev: str) -> str:
        try:
            return resolve_revision(repo, unquote(rev))
        except KeyError:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound") from None

    def _handle(self, method: str) -> None:
        try:
            with self.state.lock:
                self.state.requests.append(f"{method} {self.path}")
            self._route(method)
        except HubError as error:
            headers = {"X-Error-Message": str(error)}
            if error.code:
                headers["X-Error-Code"] = error.code
            body = json.dumps({"error": str(error)}).encode()
            self._send(error.status, body, headers, head=method == "HEAD")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    # -- routes ----------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        if method == "GET" and path == "/_test/stats":  # for benchmarks running us as a process
            return self._json({"received_file_bytes": self.state.received_file_bytes}, 200)
        if method == "GET" and path == "/api/whoami-v2":
            user = self._user()
            if user is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            orgs = [{"name": o} for o, members in self.state.orgs.items() if user in members]
            return self._json({"type": "user", "name": user, "orgs": orgs,
                               "auth": {"accessToken": {"role": "write"}}})
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(self._body()))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(self._body()))
        if m := _LFS_BATCH.match(path):
            return self._lfs_batch(m["repo"], json.loads(self._body()))
        if method == "PUT" and (m := _LFS_PUT.match(path)):
            return self._lfs_put(m["repo"], m["oid"], self._body())
        if m := _RESOLVE.match(path):
            return self._resolve(m["repo"], m["rev"], unquote(m["path"]), head=method == "HEAD")
        if m := _API_REPO.match(path):
            return self._repo_api(method, m["repo"], m["op"], m["rev"], m["rest"], url.query)
        raise HubError(404, f"no route for {method} {path}")

    def _create_repo(self, payload: dict[str, Any]) -> None:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        if not self._may_write(user, repo_id):
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        with self.state.lock:
            if repo_id in self.state.repos:
                # the Hub answers 409 with the repo's url, which create_repo(exist_ok) reads
                return self._json({"error": "You already created this model repo",
                                   "url": f"{self.server.endpoint}/{repo_id}"}, 409)
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_id, private)
            self.state.git[git_blob_id(GITATTRIBUTES)] = GITATTRIBUTES
            entry = Entry(len(GITATTRIBUTES), git_blob_id(GITATTRIBUTES))
            repo.branches["main"] = self.state.new_commit(repo, {".gitattributes": entry},
                                                          "initial commit")
            self.state.repos[repo_id] = repo
        self._json({"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id}, 200)

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            return self._json({"errors": [{"message": str(error)}]}, 400)
        if meta is not None and not isinstance(meta, dict):
            return self._json({"errors": [{"message": "metadata must be a mapping"}]}, 400)
        self._json({"errors": [], "warnings": []})

    def _repo_api(self, method: str, repo_id: str, op: str | None, rev: str | None,
                  rest: str | None, query: str) -> None:
        if op is None and method == "GET":
            repo = self._repo(repo_id)
            return self._json(self._info(repo, repo.branches["main"]))
        if op == "revision" and method == "GET" and rev:
            repo = self._repo(repo_id)
            return self._json(self._info(repo, self._commit_of(repo, rev)))
        if op == "refs" and method == "GET":
            repo = self._repo(repo_id)

            def refs(kind: str, items: dict[str, str]) -> list[dict[str, str]]:
                return [{"name": n, "ref": f"refs/{kind}/{n}",
                         "targetCommit": self.state.hostile.get("commit", c)}
                        for n, c in sorted(items.items())]

            return self._json({"branches": refs("heads", repo.branches), "converts": [],
                               "tags": refs("tags", repo.tags), "pullRequests": []})
        if op == "tag" and method == "POST" and rev:
            repo = self._repo(repo_id, write=True)
            name = json.loads(self._body())["tag"]
            with self.state.lock:
                if name in repo.tags:
                    raise HubError(409, f"Tag {name} already exists")
                repo.tags[name] = self._commit_of(repo, rev)
            return self._json({})
        if op == "preupload" and method == "POST" and rev:
            repo = self._repo(repo_id, write=True)
            files = self._tree(repo, self._commit_of(repo, rev))
            out = []
            for f in json.loads(self._body())["files"]:
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000
                have = files.get(f["path"])
                oid = (have.sha256 if lfs else have.blob_id) if have else None
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": oid})
            return self._json({"files": out, "commitOid": self._commit_of(repo, rev)})
        if op == "commit" and method == "POST" and rev:
            repo = self._repo(repo_id, write=True)
            return self._commit(repo, unquote(rev), self._body())
        if op == "tree" and method == "GET" and rev:
            repo = self._repo(repo_id)
            files = self._tree(repo, self._commit_of(repo, rev))
            prefix = unquote(rest or "").strip("/")
            items = [self._path_info(p, e) for p, e in sorted(files.items())
                     if not prefix or p.startswith(prefix + "/")]
            return self._json(items)
        if op == "paths-info" and method == "POST" and rev:
            repo = self._repo(repo_id)
            files = self._tree(repo, self._commit_of(repo, rev))
            form = parse_qs(self._body().decode())
            return self._json([self._path_info(p, files[p]) for p in form.get("paths", [])
                               if p in files])
        raise HubError(404, f"no route for {method} {self.path}")

    def _tree(self, repo: Repo, commit: str) -> dict[str, Entry]:
        return repo.commits[commit]

    def _info(self, repo: Repo, commit: str) -> dict[str, Any]:
        return {"id": repo.repo_id, "modelId": repo.repo_id,
                "sha": self.state.hostile.get("commit", commit),
                "private": repo.private, "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(repo.commits[commit])]}

    def _path_info(self, path: str, e: Entry) -> dict[str, Any]:
        size = self.state.hostile.get("size", e.size)
        info: dict[str, Any] = {"type": "file", "path": path, "size": size, "oid": e.blob_id}
        if e.sha256:
            info["lfs"] = {"oid": self.state.hostile.get("lfs_oid", e.sha256), "size": size,
                           "pointerSize": len(lfs_pointer(e.sha256, e.size))}
        return info

    def _commit(self, repo: Repo, branch: str, body: bytes) -> None:
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"]
        with self.state.lock:
            head = repo.branches[branch]
            if header.get("parentCommit") and header["parentCommit"] != head:
                raise HubError(412, "parent commit is not the head of the branch")
            files = dict(repo.commits[head])
            for item in lines[1:]:
                value = item["value"]
                if item["key"] == "file":
                    data = base64.b64decode(value["content"])
                    self.state.received_file_bytes += len(data)
                    oid = git_blob_id(data)
                    self.state.git[oid] = data
                    files[value["path"]] = Entry(len(data), oid)
                elif item["key"] == "lfsFile":
                    sha = value["oid"]
                    if sha not in repo.lfs:
                        raise HubError(400, f"LFS object {sha} was never uploaded")
                    size = len(repo.lfs[sha])
                    files[value["path"]] = Entry(size, git_blob_id(lfs_pointer(sha, size)), sha)
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                else:
                    raise HubError(400, f"unsupported commit operation {item['key']}")
            sha = self.state.new_commit(repo, files, header.get("summary", ""))
            repo.branches[branch] = sha
            self.state.commit_count += 1
        self._json({"commitUrl": f"{self.server.endpoint}/{repo.repo_id}/commit/{sha}",
                    "commitOid": sha, "pullRequestUrl": None})

    def _lfs_batch(self, repo_id: str, payload: dict[str, Any]) -> None:
        repo = self._repo(repo_id, write=payload.get("operation") == "upload")
        objects = []
        for obj in payload["objects"]:
            item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in repo.lfs:
                href = f"{self.server.endpoint}/_lfs/{repo_id}/{obj['oid']}"
                item["actions"] = {"upload": {"href": href}}
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, repo_id: str, oid: str, data: bytes) -> None:
        repo = self._repo(repo_id)
        with self.state.lock:
            self.state.received_file_bytes += len(data)
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "uploaded bytes do not match the announced sha256")
        with self.state.lock:
            repo.lfs[oid] = data
        self._send(200, b"")

    def _resolve(self, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_of(repo, rev)
        if status := self.state.fail_resolve.get(f"{commit}/{path}"):
            raise HubError(status, "simulated outage")
        entry = repo.commits[commit].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = repo.lfs[entry.sha256] if entry.sha256 else self.state.git[entry.blob_id]
        etag = self.state.hostile.get("etag", entry.blob_id)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "none"}
        if entry.sha256:
            headers["X-Linked-Etag"] = f'"{self.state.hostile.get("etag", entry.sha256)}"'
            headers["X-Linked-Size"] = str(entry.size)
        self._send(200, data, headers, content_type="application/octet-stream", head=head)


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HubState) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.state = state
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"


def start_hub(tokens: dict[str, str], orgs: dict[str, set[str]] | None = None
              ) -> tuple[HubServer, threading.Thread]:
    """Start a server in a daemon thread; `server.endpoint` is its base URL."""
    server = HubServer(HubState(tokens=tokens, orgs=orgs or {}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def main() -> None:
    """`python tests/hub/server.py TOKEN USER`: serve on a free loopback port until stdin closes.

    Prints the endpoint URL as its first line, so a benchmark can run the server as a separate
    process (benchmarks do not import `tests`).
    """
    import sys

    token, user = sys.argv[1], sys.argv[2]
    server, _ = start_hub({token: user})
    print(server.endpoint, flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
