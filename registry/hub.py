"""Hugging Face Hub sync: push versions as tagged commits, pull them back verified.

One Hub repo per adapter; each version is one commit on `main` tagged `v<N>`, holding the PEFT
files, `adapt.json` (the manifest) and a model card. Every call goes through the real
`huggingface_hub` client, so the endpoint and token come from HF_ENDPOINT, HF_TOKEN and
`hf auth login`; this module never reads, stores or prints a token.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import (
    AdaptError,
    AlreadyExists,
    AuthError,
    IntegrityError,
    InvalidAdapter,
    NotFound,
    RemoteError,
    UsageError,
)
from registry.hashing import CHUNK
from registry.manifest import (
    CARD_NAME,
    MANIFEST_NAME,
    build_manifest,
    build_model_card,
    parse_manifest,
    parse_time,
    render_manifest,
)
from registry.peft_dir import CONFIG_NAME, PICKLE_NAME, WEIGHTS_NAME

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from registry.registry import Registry, VersionInfo

Progress = Callable[[int, int | None], None]
_TAG_RE = re.compile(r"^v([1-9][0-9]*)$")
ADAPTER_FILES = (CONFIG_NAME, WEIGHTS_NAME)


# -- errors: huggingface_hub's exceptions mapped in one place ---------------------------------
def translate_hub_error(error: BaseException, repo_id: str | None,
                        revision: str | None = None) -> AdaptError | None:
    """The typed adapt error for an exception raised by huggingface_hub (None: not a Hub error)."""
    import httpx2
    from huggingface_hub import errors as hf

    if isinstance(error, hf.LocalEntryNotFoundError) and error.__cause__ is not None:
        # hf_hub_download fell back to the cache and found nothing: the cause says why
        cause = translate_hub_error(error.__cause__, repo_id, revision)
        if cause is not None:
            return cause
    repo = repo_id or "the repo"
    login = "log in with `hf auth login` or set HF_TOKEN"
    if isinstance(error, hf.GatedRepoError):
        return AuthError(f"no access to gated repo {repo}",
                         f"accept its terms on the Hub, then {login}")
    if isinstance(error, hf.RepositoryNotFoundError):
        return NotFound("Hub repo", repo, f"check the name; for a private repo {login}")
    if isinstance(error, hf.RevisionNotFoundError):
        return NotFound("Hub revision", f"{repo}@{revision or 'main'}",
                        "use a tag (v1, v2, ...), a branch or a commit: see `adapt remote status`")
    if isinstance(error, hf.RemoteEntryNotFoundError):
        return NotFound("file on the Hub", f"{repo}@{revision or 'main'}",
                        "is it a PEFT adapter repo?")
    if isinstance(error, hf.LocalTokenNotFoundError):
        return AuthError("no Hugging Face token found", login)
    if isinstance(error, hf.HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            return AuthError("the Hub rejected the token (401)", f"{login} with a valid token")
        if status == 403:
            return AuthError(f"no permission to write to {repo}",
                             f"use a token with write access ({login}), "
                             "or pass --repo in your namespace")
        server = error.server_message.splitlines()[0][:200] if error.server_message else ""
        return RemoteError(
            f"the Hub answered {status} for {repo}" + (f": {server}" if server else ""),
            "try again later; nothing was registered",
        )
    if isinstance(error, hf.OfflineModeIsEnabled):
        return RemoteError("huggingface_hub is in offline mode (HF_HUB_OFFLINE is set)",
                           "unset HF_HUB_OFFLINE to reach the Hub")
    if isinstance(error, httpx2.HTTPError | hf.LocalEntryNotFoundError
                  | ConnectionError | TimeoutError):
        from huggingface_hub import constants

        return RemoteError(
            f"cannot reach the Hub at {constants.ENDPOINT} ({type(error).__name__})",
            "check the network or HF_ENDPOINT; nothing was registered",
        )
    if isinstance(error, ValueError) and "Invalid metadata in README.md" in str(error):
        detail = str(error).splitlines()[-1]
        return RemoteError(f"the Hub refused the model card for {repo}: {detail}")
    return None


@contextmanager
def hub_errors(repo_id: str | None, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub exceptions raised inside the block into typed adapt errors."""
    try:
        yield
    except AdaptError:
        raise
    except Exception as error:
        mapped = translate_hub_error(error, repo_id, revision)
        if mapped is None:
            raise
        raise mapped from None


def hub_api() -> HfApi:
    """An HfApi that takes the endpoint and token from the environment and `hf auth login`."""
    from huggingface_hub import HfApi

    return HfApi()


# -- hashing: what the Hub reports is sha256 for LFS files and a git blob id otherwise ---------
def git_blob_id(path: Path) -> str:
    """Git's blob id (sha1 of `blob <size>\\0` + bytes), as the Hub reports for regular files."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _matches(remote: Any, local: Path, sha256: str | None = None) -> bool:
    """Whether a RepoFile from the Hub holds the bytes of `local`."""
    if remote is None:
        return False
    if remote.lfs is not None:
        return (sha256 or _sha256(local)) == remote.lfs.sha256
    return git_blob_id(local) == remote.blob_id


def _remote_files(api: HfApi, repo_id: str, revision: str) -> dict[str, Any]:
    """path -> RepoFile at a revision (top level only: adapters live at the repo root)."""
    from huggingface_hub.hf_api import RepoFile

    return {f.path: f for f in api.list_repo_tree(repo_id, revision=revision)
            if isinstance(f, RepoFile)}


# -- results ----------------------------------------------------------------------------------
@dataclass
class PushedVersion:
    ref: str
    tag: str
    commit: str
    state: str  # pushed | unchanged | metadata-differs
    uploaded_files: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0


@dataclass
class PushResult:
    repo: str
    url: str
    versions: list[PushedVersion]

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "url": self.url, "versions": [v.__dict__ for v in self.versions]}


@dataclass
class PulledVersion:
    ref: str
    revision: str
    commit: str
    tag: str | None
    created: bool
    has_manifest: bool


@dataclass
class PullResult:
    repo: str
    versions: list[PulledVersion]

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "versions": [v.__dict__ for v in self.versions]}


# -- push -------------------------------------------------------------------------------------
def default_repo_id(reg: Registry, name: str, api: HfApi) -> str:
    """--repo wins; else the repo this adapter was last pushed to or pulled from; else
    `<your Hub user name>/<adapter name>` (from whoami)."""
    recorded = reg.last_hub_repo(name)
    if recorded:
        return recorded
    with hub_errors(None):
        user = api.whoami(cache=True)["name"]
    return f"{user}/{name}"


def stage_version(reg: Registry, info: VersionInfo, repo_id: str, tmp: Path, *,
                  publish_tags: bool = False, license: str | None = None) -> dict[str, Path]:
    """The files of one version's commit: PEFT files, adapt.json and README.md.

    The PEFT files are read straight from the blob store (no copy); push checks their sha256
    while the client hashes them for upload.
    """
    files = {}
    for f in info.files:
        if not reg.store.has(f.sha256):
            raise IntegrityError(f"{info.ref}/{f.path}", f.sha256, "missing blob")
        files[f.path] = reg.store.path(f.sha256)
    manifest = build_manifest(reg, info.ref, publish_tags=publish_tags)
    (tmp / MANIFEST_NAME).write_bytes(render_manifest(manifest))
    (tmp / CARD_NAME).write_text(build_model_card(manifest, repo_id, license=license))
    files[MANIFEST_NAME] = tmp / MANIFEST_NAME
    files[CARD_NAME] = tmp / CARD_NAME
    return files


def push(reg: Registry, ref: str, *, repo: str | None = None, private: bool = False,
         all_versions: bool = False, on_progress: Progress | None = None,
         publish_tags: bool = False, license: str | None = None) -> PushResult:
    """Push a version (or all of them) as tagged commits, skipping what the Hub already holds.

    repo: ORG/NAME; default: see `default_repo_id`.
    publish_tags: put the version's local tags in adapt.json (`push --tags`); else none.
    license: the card's license (an SPDX-style id such as apache-2.0).
    A version whose tag exists with the same files is left alone (no bytes, no commit). A tag
    with different weights is a conflict. Versions are appended in order: one older than the
    Hub's newest tag cannot be added.
    """
    from huggingface_hub import CommitOperationAdd

    info = reg.resolve(ref)
    api = hub_api()
    repo_id = repo or default_repo_id(reg, info.name, api)
    versions = reg.versions_of(info.name) if all_versions else [info]
    total = sum(v.size_bytes for v in versions)
    done = 0
    if on_progress:
        on_progress(0, total)
    results: list[PushedVersion] = []
    with hub_errors(repo_id), _hf_bars_off():
        url = str(api.create_repo(repo_id, private=private, exist_ok=True))
        refs = api.list_repo_refs(repo_id)
        tags = {t.name: t.target_commit for t in refs.tags}
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
        newest = max((int(m[1]) for t in tags if (m := _TAG_RE.match(t))), default=0)
        for v in versions:
            tag = f"v{v.version}"
            with tempfile.TemporaryDirectory(prefix="adapt-push-") as tmp:
                staged = stage_version(reg, v, repo_id, Path(tmp), publish_tags=publish_tags,
                                       license=license)
                sha = {f.path: f.sha256 for f in v.files}
                if tag in tags:
                    remote = _remote_files(api, repo_id, tags[tag])
                    if not all(_matches(remote.get(p), staged[p], sha[p]) for p in sha):
                        raise AlreadyExists(
                            f"{repo_id}@{tag} with other weights than {v.ref}",
                            "push to another --repo, or pull it to compare",
                        )
                    same_meta = all(_matches(remote.get(p), staged[p])
                                    for p in (MANIFEST_NAME, CARD_NAME))
                    # published tags are immutable: newer scores or tags stay local
                    state = "unchanged" if same_meta else "metadata-differs"
                    results.append(PushedVersion(v.ref, tag, tags[tag], state))
                    reg.record_hub_link(v.id, repo_id, tags[tag], tag, "push")
                    done += v.size_bytes
                    if on_progress:
                        on_progress(done, total)
                    continue
                if v.version < newest:
                    raise UsageError(
                        f"{repo_id} already has v{newest}, newer than {v.ref}: versions are "
                        "appended to main in order",
                        "push it to another --repo",
                    )
                remote = _remote_files(api, repo_id, head) if head else {}
                changed = [p for p, path in staged.items()
                           if not _matches(remote.get(p), path, sha.get(p))]
                commit = head
                if changed:
                    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(staged[p]))
                           for p in changed]
                    for op in ops:  # the client hashes each file once; reuse it to verify
                        want = sha.get(op.path_in_repo)
                        got = op.upload_info.sha256.hex()
                        if want is not None and got != want:
                            raise IntegrityError(f"{v.ref}/{op.path_in_repo}", want, got)
                    commit = api.create_commit(
                        repo_id, ops, commit_message=f"adapt push {v.ref}",
                        commit_description=f"digest {v.digest}", parent_commit=head,
                    ).oid
                assert commit is not None
                api.create_tag(repo_id, tag=tag, revision=commit)
                tags[tag] = head = commit
                newest = max(newest, v.version)
                reg.record_hub_link(v.id, repo_id, commit, tag, "push")
                results.append(PushedVersion(
                    v.ref, tag, commit, "pushed", changed,
                    sum(staged[p].stat().st_size for p in changed),
                ))
                done += v.size_bytes
                if on_progress:
                    on_progress(done, total)
    return PushResult(repo_id, url, results)


# -- pull -------------------------------------------------------------------------------------
@dataclass
class _Fetched:
    revision: str
    commit: str
    tag: str | None
    dir: Path  # adapter_config.json + adapter_model.safetensors (links into the HF cache)
    manifest: dict[str, Any] | None


def parse_repo_spec(spec: str) -> tuple[str, str | None]:
    """`ORG/NAME[@REVISION]` -> (repo id, revision or None)."""
    repo_id, _, revision = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or (spec.count("@") and not revision):
        raise UsageError(f"invalid Hub repo {spec!r}", "use ORG/NAME or ORG/NAME@REVISION")
    return repo_id, revision or None


def _progress_tqdm(on_progress: Progress | None, state: dict[str, int]) -> type | None:
    """A tqdm class for hf_hub_download that reports bytes to `on_progress` and draws nothing."""
    if on_progress is None:
        return None
    report = on_progress
    from tqdm import tqdm as base_tqdm

    class _Report(base_tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes a name; tqdm does not
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            state["done"] += int(n or 0)
            report(state["done"], state["total"])
            return None

    return _Report


@contextmanager
def _hf_bars_off() -> Iterator[None]:
    """Silence huggingface_hub's own tqdm bars: progress goes through `on_progress` instead."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


# What a file may weigh before it is downloaded: a hostile or broken server cannot fill the disk.
MAX_SMALL_FILE = {CONFIG_NAME: 1 << 20, MANIFEST_NAME: 16 << 20}
MAX_WEIGHTS_FILE = 64 << 30
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def checked_commit(commit: object, where: str) -> str:
    """A commit id from the server, refused unless it is 40 hex characters (it becomes a path
    component in caches: `../..` must never get that far)."""
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise RemoteError(f"the Hub answered an invalid commit id for {where}: {commit!r:.60}",
                          "is HF_ENDPOINT a Hugging Face Hub?")
    return commit


def _checked_entry(remote: Any, where: str, limit: int) -> tuple[str, str, int]:
    """(kind, expected digest, size) of a tree entry, each checked before any download."""
    size = getattr(remote, "size", None)
    if not isinstance(size, int) or size < 0:
        raise RemoteError(f"the Hub answered an invalid size for {where}: {size!r:.40}")
    if size > limit:
        raise RemoteError(f"{where} is {size:,} bytes, more than the {limit:,} adapt accepts "
                          "for it", "is this an adapter repo?")
    if remote.lfs is not None:
        sha = getattr(remote.lfs, "sha256", None)
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise RemoteError(f"the Hub answered an invalid sha256 for {where}: {sha!r:.80}")
        return "sha256", sha, size
    blob = getattr(remote, "blob_id", None)
    if not isinstance(blob, str) or not _COMMIT.fullmatch(blob):
        raise RemoteError(f"the Hub answered an invalid git blob id for {where}: {blob!r:.80}")
    return "git", blob, size


def _download_verified(api: HfApi, repo_id: str, commit: str, path: str, remote: Any,
                       tqdm_class: type | None, dest: Path, limit: int) -> tuple[Path, str]:
    """Download one file to `dest` and check its size and digest against what the Hub
    reported; a file bigger than `limit` is refused before a byte is fetched.

    The bytes go to a path adapt chose, never to one built from the server's answer (ETag).
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    where = f"{repo_id}@{commit[:12]}/{path}"
    kind, expected, size = _checked_entry(remote, where, limit)
    url = hf_hub_url(repo_id, path, revision=commit, endpoint=api.endpoint)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(dest, "wb") as out:
            http_get(url, out, headers=build_hf_headers(token=api.token), expected_size=size,
                     displayed_filename=path, tqdm_class=tqdm_class)
    except OSError as error:  # http_get's size consistency check is an EnvironmentError too
        from huggingface_hub.errors import HfHubHTTPError

        if not isinstance(error, HfHubHTTPError) and dest.exists() \
                and dest.stat().st_size != size:
            raise IntegrityError(where, f"{size} bytes", f"{dest.stat().st_size} bytes") from None
        raise
    sha256 = _sha256(dest)
    actual = sha256 if kind == "sha256" else git_blob_id(dest)
    if expected != actual:
        dest.unlink(missing_ok=True)
        raise IntegrityError(where, expected, actual)
    return dest, sha256


def _fetch(api: HfApi, repo_id: str, revision: str, commit: str, tag: str | None,
           remote: dict[str, Any], tmp: Path, on_progress: Progress | None,
           state: dict[str, int]) -> _Fetched:

    where = f"{repo_id}@{revision}"
    if WEIGHTS_NAME not in remote:
        reason = (f"holds only {PICKLE_NAME} (a pickle, which can run code when loaded)"
                  if PICKLE_NAME in remote else f"has no {WEIGHTS_NAME}")
        raise InvalidAdapter(where, reason, "pull a repo with safetensors adapter weights")
    if CONFIG_NAME not in remote:
        raise InvalidAdapter(where, f"has no {CONFIG_NAME}", "is it a PEFT adapter repo?")
    tqdm_class = _progress_tqdm(on_progress, state)
    manifest = None
    if MANIFEST_NAME in remote:
        path, _ = _download_verified(api, repo_id, commit, MANIFEST_NAME,
                                     remote[MANIFEST_NAME], None,
                                     tmp / f"{commit}.meta" / MANIFEST_NAME,
                                     MAX_SMALL_FILE[MANIFEST_NAME])
        try:
            manifest = parse_manifest(path.read_bytes())
        except (ValueError, UsageError) as error:
            raise InvalidAdapter(f"{where}/{MANIFEST_NAME}", str(error)) from None
    out = tmp / commit
    out.mkdir()
    expected = {f["path"]: f for f in manifest["files"]} if manifest else {}
    for name in ADAPTER_FILES:
        # with a manifest, a file may weigh what it says and no more
        limit = expected[name]["size"] if name in expected else MAX_SMALL_FILE.get(
            name, MAX_WEIGHTS_FILE)
        _, actual = _download_verified(api, repo_id, commit, name, remote[name], tqdm_class,
                                       out / name, limit)
        if name in expected:
            if actual != expected[name]["sha256"]:
                raise IntegrityError(f"{where}/{name} (against {MANIFEST_NAME})",
                                     expected[name]["sha256"], actual)
    return _Fetched(revision, commit, tag, out, manifest)


def _plan_pull(api: HfApi, repo_id: str, revision: str | None,
               all_versions: bool) -> list[tuple[str, str, str | None]]:
    """(revision, commit, tag) for each version to pull, oldest first."""
    refs = api.list_repo_refs(repo_id)
    tags = sorted((int(m[1]), t.name, checked_commit(t.target_commit, f"{repo_id}@{t.name}"))
                  for t in refs.tags if (m := _TAG_RE.match(t.name)))
    if all_versions:
        if revision:
            raise UsageError("pass either @REVISION or --all-versions, not both")
        if tags:
            return [(name, commit, name) for _, name, commit in tags]
    rev = revision or "main"
    commit = checked_commit(api.repo_info(repo_id, revision=rev).sha, f"{repo_id}@{rev}")
    tag = rev if _TAG_RE.match(rev) else next((n for _, n, c in tags if c == commit), None)
    return [(rev, commit, tag)]


def pull(reg: Registry, spec: str, *, name: str | None = None, all_versions: bool = False,
         base: str | Path | None = None, on_progress: Progress | None = None,
         apply_tags: bool = False) -> PullResult:
    """Download, verify and register a version (or every `v<N>` tag) of a Hub repo.

    spec: ORG/NAME[@REVISION] (a tag such as v2, a branch or a commit; default main).
    Every file is checked against the sha256 (or git blob id) the Hub reports and against
    adapt.json before anything is registered; a mismatch raises IntegrityError.
    base: a base model directory: checks compatibility and records its fingerprint.
    """
    repo_id, revision = parse_repo_spec(spec)
    api = hub_api()
    state = {"done": 0, "total": 0}
    with tempfile.TemporaryDirectory(prefix="adapt-pull-") as tmp:
        with hub_errors(repo_id, revision), _hf_bars_off():
            plan = _plan_pull(api, repo_id, revision, all_versions)
            trees = {commit: _remote_files(api, repo_id, commit) for _, commit, _ in plan}
            state["total"] = sum(tree[p].size for tree in trees.values()
                                 for p in ADAPTER_FILES if p in tree)
            fetched = [_fetch(api, repo_id, rev, commit, tag, trees[commit], Path(tmp),
                              on_progress, state) for rev, commit, tag in plan]
        target = name or next(
            (f.manifest["name"] for f in fetched if f.manifest), None
        ) or _name_from_repo(repo_id)
        pulled: dict[str, str] = {}  # manifest ref -> local ref, to link parents pulled together
        out = []
        for f in fetched:
            out.append(_register(reg, f, repo_id, target, base, pulled, apply_tags))
            if f.manifest:
                pulled[f.manifest["ref"]] = out[-1].ref
        return PullResult(repo_id, out)


def _tag_number(tag: str | None) -> int | None:
    m = _TAG_RE.match(tag or "")
    return int(m[1]) if m else None


def _name_from_repo(repo_id: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", repo_id.split("/")[-1].lower()).strip("-._")
    return name or "adapter"


def _register(reg: Registry, f: _Fetched, repo_id: str, name: str,
              base: str | Path | None, pulled: dict[str, str],
              apply_tags: bool = False) -> PulledVersion:
    """Register the verified files with their lineage, runs, scores and Hub link: one
    transaction, so a failed pull leaves nothing behind."""
    from registry.catalog.hub import HubLinkRecord, ImportedHistory, ImportedLineage
    from registry.hashing import digest_json
    from registry.refs import Ref

    m = f.manifest or {}
    if f.manifest:
        # the content must be what the manifest says before anything is written
        local_digest = digest_json([
            {"path": p, "sha256": _sha256(f.dir / p), "size": (f.dir / p).stat().st_size}
            for p in ADAPTER_FILES if (f.dir / p).exists()
        ])
        if local_digest != m["digest"]:
            raise IntegrityError(f"{repo_id}@{f.revision} digest", m["digest"], local_digest)
    lineage: list[ImportedLineage] = []
    for p in m.get("parents", []):
        # a parent of the same line is only trusted when pulled alongside: local numbers of that
        # name may name other content
        parent = Ref.parse(p["ref"]) if not p["ref"].startswith("hf://") else None
        ref = p["ref"]
        if ref in pulled:
            ref = pulled[ref]
        elif parent is not None and parent.name == m["name"] and parent.version is not None:
            ref = f"hf://{repo_id}@v{parent.version}"
        local = reg.find_version_by_digest(p["digest"]) if p.get("digest") else None
        if local is None and ref not in pulled.values() and p.get("remote"):
            ref = p["remote"]  # not here: name it where it was pushed, so pull can fetch it
        elif local is None and not ref.startswith("hf://") and not p.get("digest"):
            try:
                local = reg.resolve(ref)
            except AdaptError:
                local = None  # not in this registry: keep the printed ref
        lineage.append(ImportedLineage(ref, local.id if local else None, p.get("weight"),
                                       p.get("role", "parent"), p.get("params"),
                                       local.digest if local else p.get("digest")))
    history = ImportedHistory(
        link=HubLinkRecord(repo_id, f.commit, f.tag, "pull"),
        created_at=parse_time(m["created_at"]) if m.get("created_at") else None,
        lineage=tuple(lineage),
        runs=tuple(m.get("validation_runs", [])),
        scores=tuple(m.get("scores", [])),
    )
    # a published source from disk is only a directory name (manifest.public_source): here
    # the version comes from the Hub commit
    published = str(m.get("source") or "")
    source = published if "://" in published else f"hf://{repo_id}@{f.commit}"
    res = reg.add(
        f.dir, name=name, base=base, tags=m.get("tags", ()) if apply_tags else (),
        note=m.get("note"), source=source, recipe=m.get("recipe"),
        base_fingerprint=None if base else m.get("base_fingerprint"), history=history,
        preferred_version=m.get("version") if isinstance(m.get("version"), int) else
        _tag_number(f.tag),
    )
    v = res.version
    return PulledVersion(v.ref, f.revision, f.commit, f.tag, res.created, f.manifest is not None)


# -- status -----------------------------------------------------------------------------------
def remote_status(reg: Registry, ref: str, *, repo: str | None = None) -> dict[str, Any]:
    """What the Hub holds for an adapter compared with the registry, version by version."""
    info = reg.resolve(ref)
    api = hub_api()
    repo_id = repo or default_repo_id(reg, info.name, api)
    local = reg.versions_of(info.name)
    with hub_errors(repo_id):
        try:
            refs = api.list_repo_refs(repo_id)
        except Exception as error:
            from huggingface_hub.errors import RepositoryNotFoundError

            if not isinstance(error, RepositoryNotFoundError):
                raise
            refs = None
        hub_tags = sorted(
            ((int(m[1]), t.name, t.target_commit) for t in (refs.tags if refs else [])
             if (m := _TAG_RE.match(t.name))),
        )
        trees = {name: _remote_files(api, repo_id, commit) for _, name, commit in hub_tags}
    branches = refs.branches if refs else []
    head = next((b.target_commit for b in branches if b.name == "main"), None)
    rows: list[dict[str, Any]] = []
    matched: set[str] = set()
    for v in local:
        sha = {f.path: f.sha256 for f in v.files}
        hit = None
        for _, tag, commit in hub_tags:
            tree = trees[tag]
            if all(_matches(tree.get(p), reg.store.path(s), s) for p, s in sha.items()):
                hit = (tag, commit)
                break
        if hit:
            matched.add(hit[0])
        same_number = f"v{v.version}" in trees and not hit
        rows.append({
            "version": v.version, "ref": v.ref, "digest": v.digest,
            "hub_tag": hit[0] if hit else None, "hub_commit": hit[1] if hit else None,
            "state": "on hub" if hit else ("differs" if same_number else "local only"),
        })
    for _, tag, commit in hub_tags:
        if tag not in matched:
            rows.append({"version": None, "ref": None, "digest": None, "hub_tag": tag,
                         "hub_commit": commit, "state": "hub only"})
    return {"adapter": info.name, "repo": repo_id, "exists": refs is not None, "main": head,
            "versions": rows}

