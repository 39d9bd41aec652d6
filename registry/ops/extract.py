"""Extract a LoRA from a full fine-tune: a truncated factorization of W_tuned - W_base per module.

Both checkpoints are streamed one tensor at a time through `safetensors.safe_open` (one shard of
each open at a time), so peak memory is a few copies of the largest weight, never a model.
Each linear module's delta is factored with a randomized range finder (Halko, Martinsson and
Tropp): a Gaussian sketch with oversampling, power iterations re-orthonormalized by QR, and the
SVD of the small projected matrix. With `energy`, the sketch doubles until it holds the asked
fraction of ||delta||_F^2 (or the matrix is small enough for an exact SVD), so the ranks are the
ones a dense SVD picks. Factors are written with lora_alpha = r (scale 1): B @ A is the delta.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.checkpoint import Checkpoint, open_checkpoint
from registry.errors import AlreadyExists, IncompatibleBase, InvalidModel, UsageError
from registry.ops.options import check_rank_budget
from registry.peft_dir import CONFIG_NAME, WEIGHTS_NAME

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int | None], None]

# names of 2-D weights that are not linear maps, when the model class cannot be built
_NON_LINEAR_RE = re.compile(r"(^|\.)(embed\w*|wte|wpe|\w*norm\w*|ln_\w*)(\.|$)")
# GPT-2-style names of transformers' Conv1D layers
_CONV1D_NAME_RE = re.compile(r"\.c_(attn|proj|fc|fc2)\.weight$")


@dataclass(frozen=True)
class ExtractOptions:
    """How to factor each delta. Exactly one of `rank` and `energy`.

    energy: the fraction of each module's ||delta||_F^2 to keep, in (0, 1]; ranks per module.
    max_rank: a cap on the ranks `energy` picks.
    modules: a regular expression searched in module names; only matches are extracted.
    save_changed: keep changed non-linear tensors (norms, embeddings) as modules_to_save.
    """

    rank: int | None = None
    energy: float | None = None
    max_rank: int | None = None
    modules: str | None = None
    oversample: int = 8
    power_iters: int = 2
    seed: int = 0
    save_changed: bool = False

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise UsageError("give exactly one of --rank and --energy")
        check_rank_budget(self.rank, self.energy, self.max_rank)
        if not 0 <= self.oversample <= 1024 or not 0 <= self.power_iters <= 32:
            raise UsageError("oversample must be in [0, 1024] and power_iters in [0, 32]")
        if self.modules is not None:
            try:
                re.compile(self.modules)
            except re.error as error:
                raise UsageError(f"--modules {self.modules!r} is not a valid pattern: {error}") \
                    from None


@dataclass(frozen=True)
class LowRank:
    """delta ~ B @ A with B (out, r), A (r, in); energy = kept / total squared norm."""

    b: torch.Tensor
    a: torch.Tensor
    energy: float
    rel_error: float
    singular_values: torch.Tensor  # as far as the sketch saw them (descending)

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


@dataclass
class ModuleExtraction:
    module: str
    shape: tuple[int, int]  # (out, in)
    rank: int
    energy: float
    rel_error: float


@dataclass
class ChangedTensor:
    name: str
    shape: tuple[int, ...]
    rel_change: float
    saved: bool


@dataclass
class ExtractResult:
    """What an extraction wrote and how well each module is captured."""

    out_dir: Path
    rank: int
    rank_pattern: dict[str, int]
    modules: list[ModuleExtraction]
    zero_modules: list[str]
    changed: list[ChangedTensor]
    options: ExtractOptions
    seconds: float
    missing_in_tuned: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Per-module figures and totals, small enough for a version's recipe."""
        errors = [m.rel_error for m in self.modules]
        return {
            "rank": self.rank,
            "modules": {m.module: {"rank": m.rank, "energy": round(m.energy, 8),
                                   "rel_error": round(m.rel_error, 8)} for m in self.modules},
            "max_rel_error": max(errors) if errors else 0.0,
            "zero_modules": self.zero_modules,
            "changed_non_linear": [asdict(c) for c in self.changed],
            "missing_in_tuned": self.missing_in_tuned,
            "options": asdict(self.options),
        }


# -- the factorization ----------------------------------------------------------------------
def _range_basis(m: torch.Tensor, k: int, power_iters: int, generator: torch.Generator
                 ) -> torch.Tensor:
    """An orthonormal (out, k) basis for the dominant range of m (randomized, float32)."""
    import torch

    omega = torch.randn(m.shape[1], k, generator=generator, dtype=m.dtype)
    q, _ = torch.linalg.qr(m @ omega)
    for _ in range(power_iters):
        z, _ = torch.linalg.qr(m.T @ q)
        q, _ = torch.linalg.qr(m @ z)
    return q


def low_rank_factors(
    delta: torch.Tensor,
    *,
    rank: int | None = None,
    energy: float | None = None,
    max_rank: int | None = None,
    oversample: int = 8,
    power_iters: int = 2,
    seed: int = 0,
) -> LowRank:
    """Truncated factors of a dense (out, in) matrix at a fixed rank or an energy threshold.

    A sketch as large as the matrix's smaller side takes the exact SVD instead. The relative
    error is measured, ||delta - B A||_F / ||delta||_F, not estimated.
    """
    import torch

    m = delta.float()
    full = min(m.shape)
    total = float(torch.linalg.vector_norm(m, dtype=torch.float64)) ** 2
    generator = torch.Generator().manual_seed(seed)
    if rank is not None:
        k = min(rank + oversample, full)
    else:
        k = min(max(32, (max_rank or 0) + oversample), full)
    while True:
        if k >= full:
            u, s, vh = torch.linalg.svd(m, full_matrices=False)
        else:
            q = _range_basis(m, k, power_iters, generator)
            uc, s, vh = torch.linalg.svd(q.T @ m, full_matrices=False)
            u = q @ uc
        sq = s.double().square()
        if rank is not None:
            r = min(rank, full)
            break
        assert energy is not None
        cum = torch.cumsum(sq, 0) / total if total > 0 else torch.ones_like(sq)
        # a sketch that holds the asked energy, or the whole matrix, decides the rank
        if float(cum[-1]) >= energy - 1e-12 or k >= full:
            r = min(int((cum < energy - 1e-12).sum()) + 1, s.numel())
            break
        k = min(2 * k, full)
    if max_rank is not None:
        r = min(r, max_rank)
    r = max(1, min(r, s.numel()))
    root = s[:r].sqrt()
    b = (u[:, :r] * root).contiguous()
    a = (root[:, None] * vh[:r]).contiguous()
    kept = float(sq[:r].sum())
    err = float(torch.linalg.matrix_norm(m - b @ a).double()) / math.sqrt(total) if total else 0.0
    return LowRank(b, a, min(kept / total, 1.0) if total else 1.0, err, s.detach())


# -- reading both checkpoints ---------------------------------------------------------------
class _TensorReader:
    """Reads tensors of one checkpoint at their header offsets into fresh buffers, one shard
    file open at a time. Plain reads, not mmap: a mapped file's touched pages count in the
    process's RSS until it is closed, which doubled peak RSS on a 1 GB pair."""

    def __init__(self, ckpt: Checkpoint) -> None:
        self.file_of = ckpt.file_of()
        self.infos = ckpt.tensors
        self._path: Path | None = None
        self._handle: Any = None

    def get(self, name: str) -> torch.Tensor:
        import torch

        from registry.io.dtypes import torch_dtype

        path = self.file_of[name]
        if path != self._path:
            self.close()
            self._handle = open(path, "rb")  # noqa: SIM115 - closed in close()
            self._path = path
        info = self.infos[name]
        buffer = torch.empty(info.nbytes, dtype=torch.uint8)
        view = memoryview(buffer.numpy())  # type: ignore[arg-type]  # ndarray is a buffer
        self._handle.seek(info.start)
        got = 0
        while got < info.nbytes:
            n = self._handle.readinto(view[got:])
            if not n:
                raise InvalidModel(path, f"tensor {name} is truncated")
            got += n
        return buffer.view(torch_dtype(info.dtype)).reshape(info.shape)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._path = None, None


def _base_order(ckpt: Checkpoint) -> Iterator[str]:
    for f in ckpt.files:
        yield from (t.name for t in sorted(ckpt.headers[f].tensors.values(), key=lambda t: t.start))


def linear_layouts(ckpt: Checkpoint) -> dict[str, str]:
    """Weight name -> "linear" (out, in) or "conv1d" (in, out), for the 2-D linear weights.

    2-D `.weight` tensors that do not look like embeddings or norms; where Conv1D names appear,
    the model class built on the meta device (no memory) says which layers are Conv1D.
    """
    names = {n: t for n, t in ckpt.tensors.items() if n.endswith(".weight") and len(t.shape) == 2}
    kinds = _kinds_from_model(ckpt)
    out: dict[str, str] = {}
    for name in names:
        if kinds is not None and name in kinds:
            kind = kinds[name]
        else:
            kind = "other" if _NON_LINEAR_RE.search(name[: -len(".weight")]) else "linear"
        if kind != "other":
            out[name] = kind
    return out


def _kinds_from_model(ckpt: Checkpoint) -> dict[str, str] | None:
    arch = ckpt.architecture
    if not arch or not (ckpt.path / "config.json").is_file():
        return None
    # importing a model class costs seconds: only where names cannot tell, i.e. GPT-2-style
    # Conv1D layers, which store their weight transposed
    if not any(_CONV1D_NAME_RE.search(n) for n in ckpt.tensors):
        return None
    try:
        import torch
        import transformers
        from transformers.pytorch_utils import Conv1D

        cls = getattr(transformers, arch, None)
        if cls is None:
            return None
        config = transformers.AutoConfig.from_pretrained(str(ckpt.path))
        with torch.device("meta"):
            model = cls(config)
    except Exception:  # any failure here only costs the name heuristic
        return None
    kinds: dict[str, str] = {}
    for name, module in model.named_modules():
        key = f"{name}.weight"
        if isinstance(module, Conv1D):
            kinds[key] = "conv1d"
        elif isinstance(module, torch.nn.Linear):
            kinds[key] = "linear"
        elif hasattr(module, "weight") and isinstance(module.weight, torch.nn.Parameter):
            kinds[key] = "other"
    return kinds


# -- the extraction -------------------------------------------------------------------------
def extract_lora(
    base_dir: Path,
    tuned_dir: Path,
    out_dir: Path,
    options: ExtractOptions,
    *,
    base_model_name: str | None = None,
    on_progress: Progress | None = None,
) -> ExtractResult:
    """Write a PEFT LoRA directory at `out_dir` whose B @ A approximates W_tuned - W_base.

    Raises IncompatibleBase when a tensor's shape differs between the checkpoints.
    """
    import torch

    started = time.perf_counter()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise AlreadyExists(str(out_dir), "choose an empty output directory")
    base = open_checkpoint(base_dir)
    tuned = open_checkpoint(tuned_dir)
    base_t, tuned_t = base.tensors, tuned.tensors
    for name, info in tuned_t.items():
        b = base_t.get(name)
        if b is not None and tuple(b.shape) != tuple(info.shape):
            raise IncompatibleBase(name.rsplit(".", 1)[0], tuple(info.shape), tuple(b.shape),
                                   "the tuned checkpoint is not a fine-tune of this base")
    extra = sorted(set(tuned_t) - set(base_t))
    if extra:
        raise InvalidModel(tuned_dir, f"tensor {extra[0]} is not in the base model "
                           f"({len(extra)} such)", "extract from a fine-tune of this base")
    layouts = linear_layouts(base)
    pattern = re.compile(options.modules) if options.modules else None
    names = [n for n in _base_order(base) if n in tuned_t]
    missing = sorted(set(base_t) - set(tuned_t))  # e.g. tied weights saved once
    if pattern is not None:
        selected = [n for n in names if n in layouts and pattern.search(n[: -len(".weight")])]
        if not selected:
            raise UsageError(f"--modules {options.modules!r} matches no linear module")
    total = len(names)
    factors: dict[str, torch.Tensor] = {}
    modules: list[ModuleExtraction] = []
    zero: list[str] = []
    changed: list[ChangedTensor] = []
    saved_modules: set[str] = set()
    rb, rt = _TensorReader(base), _TensorReader(tuned)
    try:
        for done, name in enumerate(names, 1):
            w_base = rb.get(name)
            w_tuned = rt.get(name)
            if not (w_base.is_floating_point() and w_tuned.is_floating_point()):
                continue
            module = name[: -len(".weight")] if name.endswith(".weight") else name
            is_linear = name in layouts
            selected_linear = is_linear and (pattern is None or bool(pattern.search(module)))
            if torch.equal(w_base, w_tuned):  # unchanged: no float32 copies at all
                if selected_linear:
                    zero.append(module)
                del w_base, w_tuned
                if on_progress is not None:
                    on_progress(done, total)
                continue
            base_norm = float(torch.linalg.vector_norm(w_base, dtype=torch.float32))
            delta = w_tuned.float()
            delta.sub_(w_base)
            del w_base, w_tuned
            if selected_linear:
                if layouts[name] == "conv1d":
                    delta = delta.T
                low = low_rank_factors(
                    delta, rank=options.rank, energy=options.energy,
                    max_rank=options.max_rank, oversample=options.oversample,
                    power_iters=options.power_iters, seed=options.seed)
                key = f"base_model.model.{module}"
                factors[f"{key}.lora_A.weight"] = low.a
                factors[f"{key}.lora_B.weight"] = low.b
                modules.append(ModuleExtraction(module, (int(delta.shape[0]),
                                                         int(delta.shape[1])),
                                                low.rank, low.energy, low.rel_error))
            elif not is_linear:
                change = float(torch.linalg.vector_norm(delta))
                rel = change / base_norm if base_norm > 0 else math.inf
                owner = name.rsplit(".", 1)[0]
                # a linear module's bias cannot be saved whole: its weight is a LoRA target
                save = (options.save_changed and f"{owner}.weight" not in layouts
                        and (pattern is None or bool(pattern.search(owner))))
                changed.append(ChangedTensor(name, tuple(delta.shape), rel, save))
                if save:
                    saved_modules.add(owner)
            del delta
            if on_progress is not None:
                on_progress(done, total)
    finally:
        rb.close()
        rt.close()
    if not modules:
        raise UsageError("no linear module differs between the two checkpoints",
                         "is the tuned model a fine-tune of this base?")
    # a module's whole state is saved for modules_to_save (weight and bias alike)
    if saved_modules:
        owners = {c.name.rsplit(".", 1)[0] for c in changed if c.saved}
        for name in names:
            owner = name.rsplit(".", 1)[0]
            if owner in owners and f"{name}" in tuned_t:
                # PEFT saves a modules_to_save module's tensors under their plain names
                factors[f"base_model.model.{name}"] = rt.get(name).contiguous()
        rt.close()
    arch = base.architecture or ""
    rank, rank_pattern = write_lora_dir(
        out_dir, factors, {m.module: m.rank for m in modules},
        base_model=base_model_name or str(base.path),
        task_type="CAUSAL_LM" if arch.endswith("ForCausalLM") else None,
        fan_in_fan_out=any(layouts.get(f"{m.module}.weight") == "conv1d" for m in modules),
        modules_to_save=sorted(saved_modules),
    )
    return ExtractResult(out_dir, rank, rank_pattern, modules, zero, changed, options,
                         time.perf_counter() - started, missing)


def write_lora_dir(
    out_dir: Path,
    tensors: dict[str, torch.Tensor],
    ranks: dict[str, int],
    *,
    base_model: str | None,
    task_type: str | None,
    fan_in_fan_out: bool = False,
    modules_to_save: list[str] | None = None,
) -> tuple[int, dict[str, int]]:
    """Write a plain PEFT LoRA directory with scale 1 everywhere (lora_alpha = r per module).

    tensors: saved keys to tensors (lora_A/lora_B per module, modules_to_save tensors).
    ranks: module -> rank. Returns (r, rank_pattern) as written.
    """
    from safetensors.torch import save_file

    counts = Counter(ranks.values())
    # the most common rank is r; the others go to rank_pattern under their full module names
    rank = max(counts, key=lambda r: (counts[r], r))
    rank_pattern = {m: r for m, r in sorted(ranks.items()) if r != rank}
    config = {
        "peft_type": "LORA",
        "r": rank,
        # alpha = r per module: scale 1, so the stored B @ A is the delta itself
        "lora_alpha": rank,
        "rank_pattern": rank_pattern,
        "alpha_pattern": {k: float(v) for k, v in rank_pattern.items()},
        "target_modules": sorted(ranks),
        "base_model_name_or_path": base_model,
        "task_type": task_type,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": modules_to_save or None,
        "inference_mode": True,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / WEIGHTS_NAME),
              metadata={"format": "pt"})
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return rank, rank_pattern
