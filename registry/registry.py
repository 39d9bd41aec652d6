"""The Registry facade: every capability of adapt is a short method here.

The CLI, the TUI and library users call only this class. It hands work to small modules:
`registry.catalog` (every query and write, one transaction per operation), the blob store, the
pure `registry.ops` functions and the feature flows (`registry.flows`, `registry.hub`,
`registry.validation`). Adapter bytes live in the content-addressed blob store; `add` writes blobs
first and rows last, in one transaction, so a crash at any point leaves at worst an unreferenced
blob (which `gc` removes), never a row without its blob.

Importing this module stays light (no SQLAlchemy, torch or numpy): read commands start fast.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry import __version__
from registry.blobs import BlobStore, open_blob_store
from registry.catalog import Catalog
from registry.catalog import bases as base_rows
from registry.catalog import blobs as blob_rows
from registry.catalog import hub as hub_rows
from registry.catalog import scores as score_rows
from registry.catalog import versions as version_rows
from registry.catalog.hub import HubLinkRecord, ImportedHistory
from registry.config import Settings, environment_problem, load_settings
from registry.errors import (
    AlreadyExists,
    IntegrityError,
    InvalidAdapter,
    NotFound,
    UsageError,
)
from registry.integrity import check_finite_fast, checkout_problems
from registry.records import (
    AddResult,
    BaseChoice,
    BaseInfo,
    FileInfo,
    FsckReport,
    GcReport,
    ParentLink,
    RemovalPlan,
    ScoreSeries,
    SearchHit,
    VersionDetail,
    VersionInfo,
    VersionSummary,
)
from registry.refs import Ref, check_name

if TYPE_CHECKING:
    from registry.fingerprint import ModelFingerprint
    from registry.hub import PullResult, PushResult
    from registry.peft_dir import AdapterDir

# Files that make up a version. README/model cards are presentation, not content: a version's
# identity is its config and weights, so a Hub round trip keeps the same digest.
VERSION_FILES = ("adapter_config.json", "adapter_model.safetensors")


class Registry:
    """One registry: a database (SQLite by default) and a blob store under ADAPT_HOME."""

    def __init__(self, home: str | Path | None = None, db_url: str | None = None) -> None:
        self.settings: Settings = load_settings(home, db_url)
        try:  # unwritable ADAPT_HOME or unreachable database: exit 9 with one line, not 70
            self.settings.home.mkdir(parents=True, exist_ok=True)
            self.catalog = Catalog(self.settings.db_url)
        except Exception as error:
            problem = environment_problem(self.settings, error)
            if problem is None:
                raise
            raise problem from error
        self.store: BlobStore = open_blob_store(self.settings)

    @property
    def engine(self) -> Any:
        """The SQLAlchemy engine (created on first use)."""
        return self.catalog.engine

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- resolving ---------------------------------------------------------------------------
    def resolve(self, ref: str | Ref | VersionInfo) -> VersionInfo:
        """The version a reference names (NotFound if none)."""
        if isinstance(ref, VersionInfo):
            return ref
        return version_rows.resolve(self.catalog, ref)

    def version_by_id(self, version_id: int) -> VersionInfo | None:
        return version_rows.by_id(self.catalog, version_id)

    def find_version_by_digest(self, digest: str) -> VersionInfo | None:
        """A live version with exactly this content digest (the oldest), or None."""
        return version_rows.by_digest(self.catalog, digest)

    # -- adding ------------------------------------------------------------------------------
    def add(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        base: str | Path | None = None,
        tags: Sequence[str] = (),
        note: str | None = None,
        allow_nonfinite: bool = False,
        convert_pickle: bool = False,
        source: str | None = None,
        parents: Sequence[ParentLink] = (),
        recipe: dict[str, Any] | None = None,
        base_fingerprint: str | None = None,
        history: ImportedHistory | None = None,
        preferred_version: int | None = None,
    ) -> AddResult:
        """Register the PEFT adapter directory at `path` as a new version.

        base: a base model directory (or a registered base's name): fingerprint it and check that
            every adapted module exists in it with matching shapes.
        Identical content under the same name returns the existing version (created=False).
        history: what a pull restores (lineage, runs, scores, Hub link), written in the same
            transaction as the version.
        preferred_version: the number to take if this line never used it (a pull keeps the
            remote number); otherwise the next unused one.
        """
        from registry.checkpoint import open_checkpoint
        from registry.compat import check_compatible
        from registry.hashing import digest_json

        path = Path(path)
        for t in tags:
            check_name(t, "tag")
        with tempfile.TemporaryDirectory(prefix="adapt-add-") as tmp:
            adapter = self._read_for_add(path, Path(tmp), convert_pickle)
            if not allow_nonfinite:
                check_finite_fast(adapter)
            name = check_name(name) if name else derive_name(path)
            compat: dict[str, Any] | None = None
            if base is not None:
                base_dir = self._base_dir(base)
                fit = check_compatible(adapter, open_checkpoint(base_dir))
                if fit.new_heads or fit.renamed or fit.fused:
                    compat = {"new_heads": sorted(fit.new_heads), "renamed": len(fit.renamed),
                              "fused": sorted(fit.fused)}
                base_fingerprint = self.add_base(base_dir).fingerprint
            _crash_point("before_blobs")
            files = tuple(self._put(adapter.path / f) for f in VERSION_FILES)
            _crash_point("after_blobs")
            new = version_rows.NewVersion(
                name=name, digest=digest_json([asdict(f) for f in files]),
                peft_type=adapter.peft_type, method=adapter.method, rank=adapter.rank,
                alpha=adapter.alpha, use_rslora=adapter.use_rslora,
                rank_pattern=adapter.rank_pattern or None,
                alpha_pattern=adapter.alpha_pattern or None,
                target_modules=adapter.target_modules,
                modules_to_save=adapter.modules_to_save or None, task_type=adapter.task_type,
                base_model=adapter.base_model, base_fingerprint=base_fingerprint,
                params=adapter.params, dtype=adapter.dtype,
                source=source or str(path.resolve()), recipe=recipe, config=adapter.config,
                note=note, files=files, compat=compat,
            )

            def ensure_blob(f: FileInfo) -> None:
                # gc may have removed a blob we wrote before taking the lock; put it back
                if not self.store.has(f.sha256):
                    self.store.put_file(adapter.path / f.path, expected_sha256=f.sha256)

            info, created = version_rows.insert_version(
                self.catalog, new, tags=tags, parents=parents, ensure_blob=ensure_blob,
                before_commit=lambda: _crash_point("before_commit"), history=history,
                preferred_version=preferred_version,
            )
            return AddResult(info, created=created)

    def _read_for_add(self, path: Path, tmp: Path, convert: bool) -> AdapterDir:
        from registry.peft_dir import (
            CONFIG_NAME,
            PICKLE_NAME,
            WEIGHTS_NAME,
            convert_pickle,
            read_adapter_dir,
        )

        if convert and path.is_dir() and not (path / WEIGHTS_NAME).exists() and (
            path / PICKLE_NAME
        ).is_file():
            if not (path / CONFIG_NAME).is_file():
                raise InvalidAdapter(path, f"no {CONFIG_NAME}")
            shutil.copyfile(path / CONFIG_NAME, tmp / CONFIG_NAME)
            convert_pickle(path, tmp)
            return read_adapter_dir(tmp)
        return read_adapter_dir(path)

    def _put(self, file: Path) -> FileInfo:
        sha, size = self.store.put_file(file)
        return FileInfo(file.name, sha, size)

    def _base_dir(self, base: str | Path) -> Path:
        p = Path(base)
        if p.exists():
            return p
        found = self.find_base(str(base))
        if found is None or not found.path or not Path(found.path).exists():
            raise NotFound("base model", str(base), "pass the base model's directory")
        return Path(found.path)

    def base_dir(self, base: str | Path) -> Path:
        """A base model directory from a path or a registered base's name or fingerprint."""
        return self._base_dir(base)

    # -- tags, scores, removal --------------------------------------------------------------
    def tag(self, ref: str, tag: str, *, protect: bool = False,
            force: bool = False) -> VersionInfo:
        """Point `tag` of the adapter at the version `ref` names (moving it if it exists).

        protect: moving or removing the tag later needs `force`.
        """
        check_name(tag, "tag")
        return version_rows.tag(self.catalog, ref, tag, protect=protect, force=force)

    def untag(self, name: str, tag: str, *, force: bool = False) -> None:
        check_name(name)
        version_rows.untag(self.catalog, name, tag, force=force)

    def add_score(
        self,
        ref: str,
        metric: str,
        value: float,
        *,
        dataset: str | None = None,
        base_fingerprint: str | None = None,
        run_id: int | None = None,
        higher_is_better: bool | None = None,
        quantization: str | None = None,
        append: bool = False,
    ) -> int:
        """Record an evaluation score (finite values only).

        The same (version, metric, dataset, base, quantization, run) key is replaced unless
        `append` keeps history; returns how many rows were replaced.
        """
        import math

        if not metric or len(metric) > 128:
            raise UsageError("a metric name is 1-128 characters")
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise UsageError(f"a score value must be a finite number, not {value!r}")
        return score_rows.add_score(
            self.catalog, ref, metric, float(value), dataset=dataset,
            base_fingerprint=base_fingerprint, run_id=run_id,
            higher_is_better=higher_is_better, quantization=quantization, append=append)

    def remove(self, ref: str, *, force: bool = False) -> VersionInfo:
        """Delete one version, leaving a tombstone; its blobs stay until `gc`.

        Refused (InUse, exit 8) while it is tagged, pushed, a parent of another version or has
        a passing validation run, unless `force`.
        """
        info, _ = version_rows.remove(self.catalog, ref, force=force)
        return info

    def removal_plan(self, ref: str) -> RemovalPlan:
        """What `remove` would delete and what stands in its way (nothing is changed)."""
        info, blockers = version_rows.remove(self.catalog, ref, dry_run=True)
        return RemovalPlan(info.ref, info.digest, [f.path for f in info.files], blockers)

    # -- finding the best --------------------------------------------------------------------
    def search(self, filter_text: str = "", *, order_by: str | None = None,
               dataset: str | None = None, base: str | None = None,
               limit: int | None = None) -> list[SearchHit]:
        """Versions matching a filter string (see registry.search), ordered."""
        from registry.flows.search import search_versions
        from registry.search import metric_names, parse_filter, parse_order

        node = parse_filter(filter_text)
        order_field, descending = parse_order(order_by)
        metrics = metric_names(node)
        if order_field.startswith("metric."):
            metrics.add(order_field[len("metric."):])
        return search_versions(self, node, metrics, order_field, descending, dataset, base, limit)

    def best(self, metric: str, *, dataset: str | None = None,
             base: str | None = None) -> SearchHit:
        """The version with the best recorded `metric` (direction from the score or its name)."""
        from registry.scoring import direction

        hits = self.search(f"metric.{metric} > -1e308", dataset=dataset, base=base)
        if not hits:
            where = "".join(f" {k} {v!r}" for k, v in (("on dataset", dataset), ("for base", base))
                            if v)
            raise NotFound("score", f"{metric}{where}", "record one with `adapt score`")
        higher = direction(metric, hits[0].higher_is_better)
        from registry.scoring import Candidate, pick_best

        winner = pick_best([Candidate(h.ref, h.metrics[metric], h.created) for h in hits],
                           higher)
        assert winner is not None
        return next(h for h in hits if h.ref == winner.ref)

    # -- files out ---------------------------------------------------------------------------
    def export(self, ref: str | VersionInfo, dest: str | Path) -> Path:
        """Write the version's PEFT directory to `dest` (new or empty), verifying every hash."""
        info = self.resolve(ref)
        dest = Path(dest)
        if dest.is_symlink() and not dest.exists():
            raise UsageError(f"{dest} is a symbolic link to a missing path",
                             "pass a new or empty directory")
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise AlreadyExists(str(dest), "choose an empty or new directory")
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # the user's path: unwritable, under a file, a bad name
            raise UsageError(f"cannot create {dest}: {error.strerror or error}") from None
        for f in info.files:
            if not self.store.has(f.sha256):
                raise IntegrityError(f"{info.ref}/{f.path}", f.sha256, "missing blob")
            self.store.copy_out(f.sha256, dest / f.path)
        return dest

    def checkout(self, ref: str | VersionInfo) -> Path:
        """A verified, read-only PEFT directory for the version, cached by its digest."""
        info = self.resolve(ref)
        root = self.settings.cache_dir / "checkouts"
        target = root / info.digest.split(":", 1)[-1][:32]
        if target.is_dir():
            if not checkout_problems(target, info.files):
                return target
            # an edited or truncated cache copy is never used: copy it again from the blobs
            shutil.rmtree(target, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
        try:
            for f in info.files:
                if not self.store.has(f.sha256):
                    raise IntegrityError(f"{info.ref}/{f.path}", f.sha256, "missing blob")
                self.store.copy_out(f.sha256, tmp / f.path)
            try:
                os.replace(tmp, target)
            except OSError:  # another process won the race; its copy is as good
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    # -- listing and showing -----------------------------------------------------------------
    def list_versions(
        self,
        *,
        base: str | None = None,
        method: str | None = None,
        tag: str | None = None,
        name_like: str | None = None,
        all_versions: bool = False,
        limit: int | None = None,
        offset: int = 0,
        order: str = "name",
    ) -> list[VersionSummary]:
        """Latest version of each adapter (or every version)."""
        return version_rows.list_versions(
            self.catalog, base=base, method=method, tag=tag, name_like=name_like,
            all_versions=all_versions, limit=limit, offset=offset, order=order,
        )

    def count_versions(
        self,
        *,
        base: str | None = None,
        method: str | None = None,
        tag: str | None = None,
        name_like: str | None = None,
        all_versions: bool = False,
    ) -> int:
        return version_rows.count_versions(self.catalog, base=base, method=method, tag=tag,
                                           name_like=name_like, all_versions=all_versions)

    def show(self, ref: str | VersionInfo) -> VersionDetail:
        """Everything known about one version, as the `adapt show --json` object."""
        return version_rows.detail(self.catalog, ref)

    def adapter_versions(self, name: str) -> list[VersionSummary]:
        """Every version of adapter `name`, oldest first."""
        rows = self.list_versions(name_like=name, all_versions=True)
        return [r for r in rows if r.name == name]

    def score_series(self, name: str) -> list[ScoreSeries]:
        """Every score of adapter `name`, per metric and dataset, by version (latest wins)."""
        series: dict[tuple[str, str | None], dict[int, float]] = {}
        for metric, dataset, version, value in score_rows.score_series(self.catalog, name):
            series.setdefault((metric, dataset), {})[version] = value
        return [ScoreSeries(metric, dataset, values) for (metric, dataset), values in
                sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))]

    # -- base models -------------------------------------------------------------------------
    def fingerprint(self, model_dir: str | Path) -> ModelFingerprint:
        """Fingerprint a checkpoint (cached by file stats under ADAPT_HOME/cache)."""
        from registry.fingerprint import fingerprint_model

        return fingerprint_model(model_dir, cache_dir=self.settings.cache_dir)

    def add_base(
        self,
        model_dir: str | Path,
        *,
        name: str | None = None,
        kind: str = "base",
        source_version_id: int | None = None,
        parent_fingerprint: str | None = None,
        details: dict[str, Any] | None = None,
        hub_id: str | None = None,
    ) -> BaseInfo:
        """Record a checkpoint by fingerprint (idempotent; a new name or path updates it).

        hub_id: its Hugging Face Hub id (ORG/NAME), kept in `details["hub_id"]` and published as
            the card's `base_model`.
        """
        if name is not None:
            check_name(name, "base name")
        if hub_id is not None:
            from registry.manifest import is_hub_id

            if not is_hub_id(hub_id):
                raise UsageError(f"--hub-id {hub_id!r} is not a Hub id", "use ORG/NAME")
            known = self.find_base_by_path(model_dir)
            details = {**((known.details or {}) if known else {}), **(details or {}),
                       "hub_id": hub_id}
        fp = self.fingerprint(model_dir)
        return base_rows.record(self.catalog, fp, name=name, kind=kind,
                                source_version_id=source_version_id,
                                parent_fingerprint=parent_fingerprint, details=details)

    def find_base_by_path(self, model_dir: str | Path) -> BaseInfo | None:
        """The registered model whose recorded path is `model_dir`, if any."""
        where = str(Path(model_dir).resolve())
        return next((b for b in self.list_bases() if b.path and
                     str(Path(b.path).resolve()) == where), None)

    def find_base(self, key: str) -> BaseInfo | None:
        """A registered model by exact fingerprint, fingerprint prefix, or name."""
        return base_rows.find(self.catalog, key)

    def show_base(self, key: str) -> BaseInfo:
        """A registered model by fingerprint (or prefix) or name; NotFound if none."""
        found = self.find_base(key)
        if found is None:
            raise NotFound("base model", key, "see `adapt base list`")
        return found

    def remove_base(self, key: str, *, force: bool = False) -> BaseInfo:
        """Forget a registered model; refused (InUse) while versions reference it."""
        return base_rows.remove(self.catalog, key, force=force)

    def list_bases(self, kind: str | None = None) -> list[BaseInfo]:
        return base_rows.list_bases(self.catalog, kind)

    def base_names(self) -> dict[str, str]:
        """Registered base names by fingerprint."""
        return base_rows.names(self.catalog)

    # -- hub bookkeeping (the transfer itself is registry.hub) --------------------------------
    def record_hub_link(self, version_id: int, repo: str, commit: str, tag: str | None,
                        direction: str) -> None:
        hub_rows.record_link(self.catalog, version_id, HubLinkRecord(repo, commit, tag, direction))

    def last_hub_repo(self, name: str) -> str | None:
        """The Hub repo adapter `name` was last pushed to or pulled from."""
        return hub_rows.last_repo(self.catalog, name)

    def versions_of(self, name: str) -> list[VersionInfo]:
        """Every version of adapter `name`, oldest first."""
        return [self.resolve(f"{name}@{n}") for n in hub_rows.version_numbers(self.catalog, name)]

    def run_details(self, run_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Figures and gates of validation runs by id, as stored (for the manifest)."""
        from registry.catalog import runs as run_rows

        return {i: {"figures": r.figures, "gates": r.stored_gates}
                for i, r in run_rows.runs_by_id(self.catalog, run_ids).items()}

    def base_choices(self) -> list[BaseChoice]:
        """Bases that registered versions point at, with how many versions each."""
        return base_rows.choices(self.catalog)

    # -- maintenance -------------------------------------------------------------------------
    def gc(self, *, dry_run: bool = False, temp_grace_seconds: float = 3600,
           temp_only: bool = False) -> GcReport:
        """Remove blobs no version references, and temp files left by interrupted writes
        (temp_only: only those, including adapt's temp dirs in the system temp dir)."""
        return blob_rows.gc(self.catalog, self.store, dry_run=dry_run,
                            temp_grace_seconds=temp_grace_seconds, temp_only=temp_only,
                            home=self.settings.home)

    def fsck(self, *, verify_hashes: bool = True) -> FsckReport:
        """Every file row has its blob; every blob hashes to its name; orphans listed apart;
        every cached checkout still holds its version's bytes."""
        report = blob_rows.fsck(self.catalog, self.store, verify_hashes=verify_hashes,
                                home=self.settings.home)
        root = self.settings.cache_dir / "checkouts"
        if root.is_dir():
            for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
                info = version_rows.by_digest_prefix(self.catalog, folder.name)
                if info is None:
                    continue  # a deleted version's copy: harmless
                for problem in checkout_problems(folder, info.files):
                    report.problems.append(
                        f"checkout cache {folder.name[:12]}: {problem} (the next use copies "
                        "it again from the blob store)")
        return report

    # -- Hugging Face Hub (registry.hub does the transfer) ------------------------------------
    def push(self, ref: str, *, repo: str | None = None, private: bool = False,
             all_versions: bool = False, on_progress: Any = None, publish_tags: bool = False,
             license: str | None = None) -> PushResult:
        """Push a version (or all of its line) to the Hub as commits tagged v<N>.

        Local tags are published only with `publish_tags`.
        """
        from registry import hub

        return hub.push(self, ref, repo=repo, private=private, all_versions=all_versions,
                        on_progress=on_progress, publish_tags=publish_tags, license=license)

    def pull(self, spec: str, *, name: str | None = None, all_versions: bool = False,
             base: str | Path | None = None, on_progress: Any = None,
             apply_tags: bool = False) -> PullResult:
        """Download, verify and register a version (or every v<N> tag) of a Hub repo.

        Tags published with the version are applied locally only with `apply_tags`.
        """
        from registry import hub

        return hub.pull(self, spec, name=name, all_versions=all_versions, base=base,
                        on_progress=on_progress, apply_tags=apply_tags)

    def remote_status(self, ref: str, *, repo: str | None = None) -> dict[str, Any]:
        """What the Hub holds for an adapter compared with the registry, version by version."""
        from registry import hub

        return hub.remote_status(self, ref, repo=repo)

    # -- model ops (delegates to registry.flows.merge / quantize / compose) -------------------
    if TYPE_CHECKING:  # the option and result types of the model-op delegates below
        from registry.ops.diff import DiffReport
        from registry.ops.merge import MergeResult
        from registry.ops.merge_stream import Progress
        from registry.ops.options import ComposeOptions, MergeOptions, QuantizeOptions
        from registry.ops.quantize import QuantizeResult

    def merge(
        self,
        ref: str | VersionInfo,
        base: str | Path,
        out: str | Path,
        options: MergeOptions | None = None,
        *,
        name: str | None = None,
        on_progress: Progress | None = None,
    ) -> tuple[MergeResult, BaseInfo]:
        """Merge a version into a base (directory or registered name), write the standalone
        model to `out` and record it as a merged model named `name` (`adapt merge`)."""
        from registry.flows.merge import merge_version

        return merge_version(self, ref, base, Path(out), options, name=name,
                             on_progress=on_progress)

    def requantize(
        self,
        out: str | Path,
        options: QuantizeOptions,
        *,
        src: str | Path | None = None,
        adapter: str | None = None,
        base: str | Path | None = None,
        name: str | None = None,
        on_progress: Progress | None = None,
    ) -> tuple[QuantizeResult, BaseInfo]:
        """Quantize `src`, or `adapter` merged into `base` in one pass, with bitsandbytes; record
        the output as a quantized model named `name` (`adapt requantize`)."""
        from registry.flows.quantize import requantize

        return requantize(self, Path(out), options, src=src, adapter=adapter, base=base,
                          name=name, on_progress=on_progress)

    def compose(
        self,
        inputs: Sequence[tuple[str, float]],
        options: ComposeOptions,
        *,
        name: str,
        on_progress: Progress | None = None,
        convert: bool = False,
    ) -> AddResult:
        """Compose (reference, weight) LoRA versions into a new version `name`, with lineage and
        recipe (`adapt compose`); `convert` first turns LoHa/LoKr/VeRA/... inputs into LoRAs."""
        from registry.flows.compose import compose_versions

        return compose_versions(self, inputs, options, name=name, on_progress=on_progress,
                                convert=convert)

    def diff(self, ref_a: str, ref_b: str) -> DiffReport:
        """Compare two LoRA versions module by module (`adapt diff`)."""
        from registry.flows.compose import diff_versions

        return diff_versions(self, ref_a, ref_b)


    # -- validation (delegates to registry.validation) ---------------------------------------
    if TYPE_CHECKING:  # the option and result types of the validation delegates below
        from registry.catalog.runs import RunRecord
        from registry.validation.options import ValidationOptions
        from registry.validation.results import ValidationReport
        from registry.validation.run import Progress as ValidationProgress

    def validate(self, ref: str | VersionInfo, options: ValidationOptions, *,
                 on_progress: ValidationProgress | None = None) -> ValidationReport:
        """Run the registered checks on a version, evaluate the gates, store the run with its
        scores (`adapt validate`). A failed check or gate does not raise: see
        `report.raise_for_status()`."""
        from registry.validation.run import run_validation

        return run_validation(self, ref, options, on_progress)

    def runs(self, ref: str | VersionInfo, limit: int | None = None) -> list[RunRecord]:
        """The validation runs of a version, newest first (`adapt runs`)."""
        return self.validation_runs(self.resolve(ref).id, limit)

    def validation_runs(self, version_id: int, limit: int | None = None) -> list[RunRecord]:
        """The validation runs of a version by id, newest first, with per-gate status and
        measured values."""
        from registry.catalog.runs import list_runs

        return list_runs(self.catalog, version_id, limit)

    # -- extraction and conversion (delegates to registry.flows.extract) ---------------------
    if TYPE_CHECKING:  # the option types of the delegates below
        from registry.ops.convert import ConvertOptions
        from registry.ops.extract import ExtractOptions

    def extract(
        self,
        base: str | Path,
        tuned: str | Path,
        options: ExtractOptions,
        *,
        name: str | None = None,
        note: str | None = None,
        on_progress: Progress | None = None,
    ) -> AddResult:
        """Register a LoRA extracted from the full fine-tune `tuned` of `base` (`adapt extract`);
        per-module rank, captured energy and error go into the version's recipe."""
        from registry.flows.extract import extract_version

        return extract_version(self, base, tuned, options, name=name, note=note,
                               on_progress=on_progress)

    def convert(
        self,
        ref: str,
        options: ConvertOptions,
        *,
        name: str | None = None,
        on_progress: Progress | None = None,
    ) -> AddResult:
        """Register version `ref` converted to a LoRA, its source as parent (`adapt convert`)."""
        from registry.flows.extract import convert_version

        return convert_version(self, ref, options, name=name, on_progress=on_progress)


    # -- serving targets and exports (delegates to registry.flows.ship) ----------------------
    if TYPE_CHECKING:  # the result types of the shipping delegates below
        from registry.flows.ship import ShipExport
        from registry.targets import TargetReport

    def export_as(
        self, ref: str | VersionInfo, out: str | Path, *, format: str = "peft",
        base: str | Path | None = None,
    ) -> ShipExport:
        """Export a version as a PEFT directory, a llama.cpp GGUF LoRA, or an Ollama directory
        (`adapt export --format`)."""
        from registry.flows.ship import export_version

        return export_version(self, ref, out, format=format, base=base)

    def export_gguf(
        self, ref: str | VersionInfo, out: str | Path, *, base: str | Path | None = None,
        outtype: str = "f32",
    ) -> ShipExport:
        """Write a LoRA version as a llama.cpp LoRA GGUF file with its provenance."""
        from registry.flows.ship import export_gguf

        return export_gguf(self, ref, out, base=base, outtype=outtype)

    def export_ollama(
        self, ref: str | VersionInfo, out: str | Path, *, base: str | Path | None = None,
        from_model: str | None = None, outtype: str = "f32",
    ) -> ShipExport:
        """Write an Ollama import directory (GGUF adapter + Modelfile) for a LoRA version."""
        from registry.flows.ship import export_ollama

        return export_ollama(self, ref, out, base=base, from_model=from_model, outtype=outtype)

    def check_target(
        self, ref: str | VersionInfo, target: str, *, base: str | Path | None = None,
        target_version: str | None = None,
    ) -> TargetReport:
        """Apply a serving target's rules (vllm, lorax, tgi, llama.cpp, ollama, peft) to a
        version and its base (`adapt check`)."""
        from registry.flows.ship import check_target

        return check_target(self, ref, target, base=base, target_version=target_version)

    def list_target_tables(self) -> list[tuple[str, str, bool]]:
        """(target, version, default) for every shipped rules table (the TUI's Targets tab)."""
        from registry.targets import list_tables

        return [(t.target, t.version, t.default) for t in list_tables()]


def derive_name(path: Path) -> str:
    """An adapter name from a directory name: lowercased, other characters folded to '-'."""
    raw = path.resolve().name.lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")
    name = re.sub(r"\.{2,}", ".", name)
    return check_name(name or "adapter")


def _crash_point(name: str) -> None:
    """Failpoint for crash tests: ADAPT_CRASH_AT=<name> kills the process here, hard."""
    if os.environ.get("ADAPT_CRASH_AT") == name:
        os._exit(137)


__all__ = [
    "AddResult",
    "RemovalPlan",
    "SearchHit",
    "BaseChoice",
    "ScoreSeries",
    "VersionDetail",
    "VersionSummary",
    "BaseInfo",
    "FileInfo",
    "FsckReport",
    "GcReport",
    "ParentLink",
    "Registry",
    "VersionInfo",
    "__version__",
]
