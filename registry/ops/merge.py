"""Merge a PEFT adapter into its base checkpoint, streaming tensor by tensor.

The output layout (file names, offsets, header) is planned from the safetensors headers before
any weight is read, so each shard's header is written first and tensors follow one at a time:
peak memory stays near the largest tensor (in float32) plus the adapter, never the whole model.
Everything is written into a temporary sibling directory and renamed into place at the end
(registry.io.outdir), so a failed or interrupted merge never leaves an output that looks
complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.io.dtypes import CONFIG_DTYPES, FLOAT_DTYPES, SHORT_DTYPES, st_dtype
from registry.io.outdir import (
    check_free_space,
    check_output_dir,
    copy_files,
    sidecar_files,
    staged_output,
)
from registry.io.shards import (
    RawBytes,
    ShardPlan,
    ShardWriter,
    TensorEntry,
    header_bytes,
    parse_size,
    split_by_size,
)
from registry.ops.merge_stream import (
    PreparedMerge,
    Progress,
    base_order,
    iter_merged_tensors,
    prepare_merge,
    stream_merged,
)
from registry.ops.merge_targets import update_model_config
from registry.ops.options import BASE_QUANTIZATIONS, MergeOptions

__all__ = ["BASE_QUANTIZATIONS", "MERGE_RECORD", "MergeOptions", "MergeResult",
           "iter_merged_tensors", "merge_adapter_into_base", "parse_size"]

MERGE_RECORD = "adapt-merge.json"


@dataclass
class MergeResult:
    """What a merge wrote."""

    out_dir: Path
    files: list[str]
    tensors: int
    merged_modules: int
    replaced_tensors: int
    total_bytes: int
    method: str
    dtype: str | None
    base_quantization: str | None
    provenance: dict[str, Any]
    seconds: float
    copied_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out_dir": str(self.out_dir)}


def plan_output(prep: PreparedMerge, dtype: str | None,
                shard_size: int | None) -> list[ShardPlan]:
    """Decide every output file and tensor (name, dtype, shape) before reading any weight."""
    target = SHORT_DTYPES[dtype] if dtype else None
    base = prep.ckpt.tensors
    rows: list[tuple[Path | None, TensorEntry]] = []
    for path, name in base_order(prep.ckpt):
        info = base[name]
        out_dtype = target if target and info.dtype in FLOAT_DTYPES else info.dtype
        rows.append((path, TensorEntry.of(name, out_dtype, info.shape)))
    for name, tensor in prep.appended.items():
        own = st_dtype(tensor)
        out_dtype = target if target and own in FLOAT_DTYPES else (
            "F32" if own in FLOAT_DTYPES else own)
        rows.append((None, TensorEntry.of(name, out_dtype, tuple(tensor.shape))))
    if shard_size is not None:
        return split_by_size([entry for _, entry in rows], shard_size)
    if prep.ckpt.index_file is None and len(prep.ckpt.files) == 1:
        return [ShardPlan(prep.ckpt.files[0].name, [entry for _, entry in rows])]
    # keep the base's sharding: same files, same assignment; new tensors join the last
    shards = {f: ShardPlan(f.name) for f in prep.ckpt.files}
    last = prep.ckpt.files[-1]
    for source, entry in rows:
        shards[source or last].entries.append(entry)
    return list(shards.values())


def merge_adapter_into_base(
    adapter_dir: Path,
    base_dir: Path,
    out_dir: Path,
    options: MergeOptions | None = None,
    *,
    provenance: dict[str, Any] | None = None,
    protected: Sequence[tuple[Path, str]] = (),
    on_progress: Progress | None = None,
) -> MergeResult:
    """Write base + adapter as a standalone model directory that transformers loads.

    options: dtype, shard size, base quantization, force (MergeOptions; defaults keep the
        base's dtypes and sharding).
    provenance: facts to record (adapter_ref, adapter_digest, base_fingerprint...); the base
        fingerprint is computed when absent.
    protected: (directory, what it is) that out_dir must not overlap besides the adapter and
        the base, e.g. the registry's home.
    on_progress: called with (bytes written, total bytes to write).
    """
    started = time.perf_counter()
    opts = options or MergeOptions()
    adapter_dir, base_dir, out_dir = Path(adapter_dir), Path(base_dir), Path(out_dir)
    sources = [(base_dir, "the base model's directory"), (adapter_dir, "the adapter's directory")]
    check_output_dir(out_dir, sources=sources, protected=protected, force=opts.force,
                     hint="write the merged model somewhere new")
    prep = prepare_merge(adapter_dir, base_dir)
    shards = plan_output(prep, opts.dtype, opts.shard_size)
    facts = _provenance(prep, base_dir, adapter_dir, opts, provenance)
    metadata = {"format": "pt", "adapt_merge": json.dumps(facts, sort_keys=True)}
    copies = sidecar_files(base_dir)
    total = sum(s.data_bytes for s in shards)
    headers = sum(len(header_bytes(s.entries, metadata)) for s in shards)
    check_free_space(out_dir, total + headers + sum(p.stat().st_size for p in copies))

    with staged_output(out_dir) as tmp:
        _write_shards(prep, shards, metadata, tmp, opts.base_quantization, on_progress)
        copied = copy_files(copies, tmp)
        update_model_config(tmp / "config.json", prep.config_updates)
        if opts.dtype is not None:
            _set_config_dtype(tmp / "config.json", opts.dtype)
        record = {**facts, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                  "files": [s.file for s in shards]}
        (tmp / MERGE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    return MergeResult(
        out_dir=out_dir,
        files=[s.file for s in shards],
        tensors=sum(len(s.entries) for s in shards),
        merged_modules=len(prep.factors),
        replaced_tensors=len(prep.replacements) + len(prep.appended),
        total_bytes=total,
        method=prep.adapter.method,
        dtype=opts.dtype,
        base_quantization=opts.base_quantization,
        provenance=facts,
        seconds=time.perf_counter() - started,
        copied_files=copied,
    )


def _provenance(prep: PreparedMerge, base_dir: Path, adapter_dir: Path, opts: MergeOptions,
                given: dict[str, Any] | None) -> dict[str, Any]:
    from registry import __version__

    facts: dict[str, Any] = dict(given or {})
    if "base_fingerprint" not in facts:
        from registry.fingerprint import fingerprint_model

        facts["base_fingerprint"] = fingerprint_model(base_dir).fingerprint
    if "adapter_ref" not in facts:
        facts["adapter_path"] = str(adapter_dir.resolve())
    facts.update(method=prep.adapter.method, peft_type=prep.adapter.peft_type, dtype=opts.dtype,
                 base_quantization=opts.base_quantization, adapt_version=__version__)
    return facts


def _write_shards(
    prep: PreparedMerge,
    shards: list[ShardPlan],
    metadata: dict[str, str],
    tmp: Path,
    base_quantization: str | None,
    on_progress: Progress | None,
) -> None:
    """Write every shard: header first, then tensors as the stream yields them, in order."""
    import torch

    planned = {e.name: e for s in shards for e in s.entries}
    base = prep.ckpt.tensors
    total = sum(s.data_bytes for s in shards)

    def raw_ok(name: str) -> bool:  # unchanged and not cast: the bytes can be copied as-is
        return planned[name].dtype == base[name].dtype

    stream = stream_merged(prep, base_quantization=base_quantization, on_progress=None,
                           raw_ok=raw_ok)
    writer = ShardWriter(tmp, metadata, plan=shards)
    try:
        for name, item, _ in stream:
            if isinstance(item, RawBytes):
                writer.add(name, item)
            else:
                with torch.no_grad():
                    writer.add(name, item)
            del item
            if on_progress is not None:
                on_progress(writer.total, total)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        stream.close()


def _set_config_dtype(config_path: Path, dtype: str) -> None:
    """Say the new dtype in config.json so `dtype="auto"` loads what was written."""
    if not config_path.is_file():
        return
    try:
        from registry.safeparse import load_json

        config = load_json(config_path.read_bytes())
    except ValueError:  # malformed, too deep or too large: leave the file as it is
        return
    if not isinstance(config, dict):
        return
    keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]
    for k in keys:
        config[k] = CONFIG_DTYPES[dtype]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
