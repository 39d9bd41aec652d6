"""Which way a metric is better, and which version wins: one rule for `best`, `search`, the TUI.

A score says whether higher is better when it was recorded (`--higher-is-better` /
`--lower-is-better`); otherwise the metric's name decides (its last dotted part, so
`validate.loss` is a loss). A metric that is neither recorded with a direction nor known has no
"best": asking for one is a usage error that names the flags.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass

from registry.errors import UsageError

HIGHER_IS_BETTER = (
    "accuracy", "acc", "acc_norm", "f1", "f1_*", "*_f1", "exact_match", "em", "bleu", "sacrebleu",
    "rouge*", "chrf*", "meteor", "bertscore*", "precision", "recall", "auc", "auroc", "map",
    "mrr", "ndcg*", "pass@*", "win_rate", "winrate", "elo", "score", "reward", "mmlu*",
    "tokens_per_s", "throughput*", "spearman*", "pearson*", "matthews*", "mcc",
)
LOWER_IS_BETTER = (
    "loss", "*_loss", "ppl", "perplexity", "wer", "cer", "ter", "latency*", "*_ms", "*_s",
    "error", "*_error", "error_rate", "kl*", "mse", "mae", "rmse", "nll", "bpb", "bpc",
    "peak_memory*", "*_mb", "*_gb", "divergence*",
)


def known_direction(metric: str) -> bool | None:
    """True/False when the metric's name says which way is better; None when it does not."""
    leaf = metric.lower().rsplit(".", 1)[-1]
    if any(fnmatch.fnmatchcase(leaf, p) for p in HIGHER_IS_BETTER):
        return True
    if any(fnmatch.fnmatchcase(leaf, p) for p in LOWER_IS_BETTER):
        return False
    return None


TIMING = ("tokens_per_s", "throughput*", "latency*", "*_ms", "*_s", "peak_memory*", "*_mb",
          "*_gb", "*_bytes", "duration*", "time*")


def is_quality_metric(metric: str) -> bool:
    """False for timings, throughput and memory (they describe the machine) and for the base
    model's own figures that a validation run records beside the adapter's (base_loss, ...)."""
    leaf = metric.lower().rsplit(".", 1)[-1]
    return not leaf.startswith("base_") and not any(fnmatch.fnmatchcase(leaf, p) for p in TIMING)


def headline_metric(metrics: Iterable[str]) -> str | None:
    """The one metric a one-cell summary shows: a quality metric whose direction is known,
    hand-recorded ones before validation figures, then by name."""
    ranked = sorted(
        (m for m in metrics if is_quality_metric(m) and known_direction(m) is not None),
        key=lambda m: (m.startswith("validate."), m),
    )
    return ranked[0] if ranked else None


def direction(metric: str, recorded: bool | None = None) -> bool:
    """True if higher is better; UsageError when neither the score nor the name says."""
    if recorded is not None:
        return recorded
    known = known_direction(metric)
    if known is None:
        raise UsageError(
            f"adapt does not know whether a higher {metric!r} is better",
            "record it with `adapt score ... --higher-is-better` or `--lower-is-better`",
        )
    return known


@dataclass(frozen=True)
class Candidate:
    ref: str
    value: float
    created_at: str = ""  # ISO time: ties go to the newest version


def pick_best(candidates: Iterable[Candidate], higher_is_better: bool) -> Candidate | None:
    """The best finite value; ties go to the most recently created version, then the ref."""
    finite = [c for c in candidates if math.isfinite(c.value)]
    if not finite:
        return None
    sign = 1.0 if higher_is_better else -1.0
    return max(finite, key=lambda c: (sign * c.value, c.created_at, c.ref))


def better(a: float, b: float, higher_is_better: bool) -> bool:
    """Whether `a` beats `b`."""
    return a > b if higher_is_better else a < b
