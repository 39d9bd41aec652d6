"""The figures a validation run measures: their names (usable in gates), checks and meaning."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    check: str  # the check that measures it
    description: str
    unit: str = ""
    score: bool = False  # also stored as an EvalScore row


CHECKS = ("integrity", "compatibility", "health", "quality", "performance", "parity")

FIGURES: dict[str, Figure] = {
    f.name: f
    for f in (
        Figure("files_checked", "integrity", "version files whose hash was checked"),
        Figure("files_bad", "integrity", "files whose bytes differ from their recorded sha256"),
        Figure("fingerprint_match", "compatibility",
               "1 if the base fingerprint equals the version's recorded one, else 0"),
        Figure("structure_match", "compatibility",
               "1 if the base's structure signature (names, shapes, dtypes) equals the recorded "
               "base's, else 0 (unset when the recorded base is not registered)"),
        Figure("modules_checked", "compatibility", "adapted modules checked against the base"),
        Figure("nonfinite", "health", "NaN/Inf values across all adapter tensors"),
        Figure("delta_norm_max", "health", "largest Frobenius norm of a module's delta weight"),
        Figure("delta_norm_median", "health", "median Frobenius norm of the module deltas"),
        Figure("delta_rel_max", "health",
               "largest ||delta W|| / ||W|| over modules (delta norm relative to the base weight)"),
        Figure("delta_outliers", "health",
               "modules whose delta norm is over 10x the median (named in the report)"),
        Figure("eval_samples", "quality", "eval texts used"),
        Figure("eval_tokens", "quality", "tokens scored (predicted positions)"),
        Figure("base_loss", "quality", "mean next-token cross-entropy of the base alone",
               "nats", True),
        Figure("base_ppl", "quality", "perplexity of the base alone", "", True),
        Figure("loss", "quality", "mean next-token cross-entropy of base + adapter", "nats",
               True),
        Figure("ppl", "quality", "perplexity of base + adapter", "", True),
        Figure("ppl_ratio", "quality", "ppl / base_ppl", "", True),
        Figure("parity_max_abs", "parity",
               "max |logit difference| between base + adapter (unmerged) and the merged model",
               "", True),
        Figure("parity_mean_abs", "parity", "mean |logit difference|, unmerged vs merged", "",
               True),
        Figure("kl_quant", "parity",
               "mean KL(merged || quantized) of next-token distributions (needs --quantized)",
               "nats", True),
        Figure("quant_top1_agree", "parity",
               "fraction of positions where merged and quantized agree on the top token", "",
               True),
        Figure("tokens_per_s", "performance",
               "forward-pass throughput of base + adapter at the fixed batch and length",
               "tokens/s", True),
        Figure("latency_ms", "performance", "median time of one forward pass of the batch", "ms",
               True),
        Figure("peak_mem_mb", "performance",
               "peak memory: torch.cuda.max_memory_allocated on GPU, process peak RSS on CPU",
               "MiB", True),
    )
}

# Figures that only exist with a given option: a gate on them without it is a usage mistake.
NEEDS_OPTION = {"kl_quant": "--quantized", "quant_top1_agree": "--quantized"}
