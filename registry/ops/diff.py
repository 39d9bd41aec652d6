"""Compare two LoRA adapters module by module: cosine, norms, sign conflicts, effective rank.

Cosine, norms and effective ranks come from the factors (r x r products and the small SVD
core); only the sign-conflict fraction needs the dense delta, one module at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry.ops.lora_algebra import (
    LoraFactors,
    entropy_rank,
    factored_inner,
    factored_norm,
    read_lora_factors,
    singular_values,
)
from registry.peft_dir import AdapterDir, load_tensors


def _module_stats(fa: LoraFactors, fb: LoraFactors) -> dict[str, Any]:
    """One module's comparison; factors carry their scale in B."""
    ba, bb = fa.b * fa.scale, fb.b * fb.scale
    na, nb = factored_norm(ba, fa.a), factored_norm(bb, fb.a)
    cos = factored_inner(ba, fa.a, bb, fb.a) / (na * nb) if na > 0 and nb > 0 else 0.0
    da, db = ba @ fa.a, bb @ fb.a
    # TIES' interference: entries both adapters move, in opposite directions (of all entries)
    conflict = ((da != 0) & (db != 0) & (da.sign() != db.sign())).float().mean()
    return {
        "cosine": cos,
        "norm_a": na,
        "norm_b": nb,
        "sign_conflict": float(conflict),
        "effective_rank_a": entropy_rank(singular_values(ba, fa.a)),
        "effective_rank_b": entropy_rank(singular_values(bb, fb.a)),
        "rank_a": fa.rank,
        "rank_b": fb.rank,
    }


def diff_adapters(a: AdapterDir, b: AdapterDir) -> dict[str, Any]:
    """Per-module stats for the modules both adapters target, plus a summary.

    Returns {"modules": {module: stats}, "summary": {modules_compared, mean_cosine,
    mean_sign_conflict, only_in_a, only_in_b}}.
    """
    fa = read_lora_factors(a, load_tensors(a), "compared")
    fb = read_lora_factors(b, load_tensors(b), "compared")
    shared = sorted(set(fa) & set(fb))
    modules = {m: _module_stats(fa[m], fb[m]) for m in shared if fa[m].shape == fb[m].shape}
    n = len(modules)
    summary = {
        "modules_compared": n,
        "mean_cosine": sum(s["cosine"] for s in modules.values()) / n if n else None,
        "mean_sign_conflict": (sum(s["sign_conflict"] for s in modules.values()) / n
                               if n else None),
        "only_in_a": sorted(set(fa) - set(fb)),
        "only_in_b": sorted(set(fb) - set(fa)),
        "shape_mismatch": sorted(m for m in shared if fa[m].shape != fb[m].shape),
    }
    return {"modules": modules, "summary": summary}


@dataclass
class DiffReport:
    """diff_adapters' result for two registered versions; `.summary` is one readable line."""

    ref_a: str
    ref_b: str
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        s = self.stats
        if not s.get("modules_compared"):
            return f"{self.ref_a} vs {self.ref_b}: no modules in common"
        text = (f"{self.ref_a} vs {self.ref_b}: {s['modules_compared']} modules, mean cosine "
                f"{s['mean_cosine']:.3f}, mean sign conflict {s['mean_sign_conflict']:.3f}")
        if s["only_in_a"] or s["only_in_b"]:
            text += f", {len(s['only_in_a'])} only in a, {len(s['only_in_b'])} only in b"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.ref_a, "b": self.ref_b, "summary": self.stats, "text": self.summary,
                "modules": self.modules}
