"""The checks that load the model: quality (loss, perplexity), performance, parity.

Quality loads base + adapter (PEFT, unmerged) once; performance times that model, and parity
compares its logits with the merged model (and a quantized one), then lets it go. torch is
imported inside the functions, through registry.validation.forward.
"""

from __future__ import annotations

from typing import Any

from registry.errors import UsageError
from registry.peft_dir import PROMPT_METHODS
from registry.validation.context import Device, LoadedModel, ValidationContext, register_check
from registry.validation.results import CheckResult, fmt

PARITY_SEQUENCES = 4  # parity and KL compare logits on the first few eval texts
EVAL_BATCH = 8


def why_not_loaded(adapter: Any) -> str | None:
    """Why quality, performance and parity do not apply to this adapter, or None."""
    if adapter.peft_type in PROMPT_METHODS:
        return (f"{adapter.method} adds virtual tokens, not weights: quality, performance and "
                "parity compare weight adapters")
    task = adapter.task_type
    if task not in (None, "CAUSAL_LM"):
        return f"task type {task}: perplexity and logit parity need a CAUSAL_LM adapter"
    return None


@register_check("quality")
def quality(ctx: ValidationContext) -> CheckResult:
    """Mean next-token loss and perplexity on the eval texts: base alone vs base + adapter."""
    from registry.validation import forward as fw
    from registry.validation.evaldata import tokenize

    adapter_dir, adapter = ctx.require_adapter()
    opts = ctx.options
    device = fw.resolve_device(opts.device)
    ctx.device = Device(device, fw.resolve_dtype(opts.dtype, device), fw.device_name(device))
    ctx.not_loadable = why_not_loaded(adapter)
    if ctx.not_loadable:
        return CheckResult("quality", "skipped", f"skipped: {ctx.not_loadable}")
    dev = ctx.device
    base_model = fw.load_causal_lm(ctx.base, dev.type, dev.dtype)
    length = fw.max_positions(base_model, opts.max_length)
    tokens = tokenize(ctx.texts.texts, ctx.base, fw.vocab_size(base_model), length)
    ctx.tokenizer, ctx.samples = tokens.tokenizer, len(tokens.sequences)
    if not tokens.sequences:
        raise UsageError("no eval text is two tokens or longer")
    batches = fw.make_batches(tokens.sequences, EVAL_BATCH, dev.type)
    model = fw.attach_adapter(base_model, adapter_dir)
    ctx.loaded = LoadedModel(model, batches)
    with model.disable_adapter():
        base_sum, count = fw.sum_loss(model, batches)
    adapted_sum, _ = fw.sum_loss(model, batches)
    base_loss, loss = base_sum / count, adapted_sum / count
    base_ppl, ppl = fw.perplexity(base_loss), fw.perplexity(loss)
    f = ctx.figures
    f.update(eval_samples=ctx.samples, eval_tokens=count, base_loss=base_loss, loss=loss,
             base_ppl=base_ppl, ppl=ppl, ppl_ratio=ppl / base_ppl if base_ppl else None)
    return CheckResult(
        "quality", "passed",
        f"ppl {fmt(f['ppl'])} with the adapter vs {fmt(f['base_ppl'])} for the base "
        f"({count} tokens of {ctx.texts.dataset})",
        {"dataset": ctx.texts.dataset, "tokenizer": tokens.tokenizer,
         "max_length": length, "device": dev.type, "dtype": dev.dtype})


@register_check("performance")
def performance(ctx: ValidationContext) -> CheckResult:
    """Tokens/s, latency and peak memory of one fixed forward pass of base + adapter."""
    from registry.validation import forward as fw

    if ctx.not_loadable:
        return CheckResult("performance", "skipped", f"skipped: {ctx.not_loadable}")
    assert ctx.loaded is not None and ctx.device is not None, "quality runs first"
    model, dev, p = ctx.loaded.model, ctx.device, ctx.options.perf
    length = fw.max_positions(model, p.length)
    m = fw.measure_forward(model, vocab=fw.vocab_size(model), batch=p.batch, length=length,
                           device=dev.type, repeats=p.repeats)
    ctx.figures.update(tokens_per_s=m.tokens_per_s, latency_ms=m.latency_ms,
                       peak_mem_mb=m.peak_mem_mb)
    return CheckResult(
        "performance", "passed",
        f"{m.tokens_per_s:,.0f} tokens/s at batch {m.batch} x {m.length} on "
        f"{dev.name}; peak memory {m.peak_mem_mb:,.0f} MiB ({m.peak_mem_kind})",
        {"batch": m.batch, "length": m.length, "repeats": m.repeats,
         "peak_mem_kind": m.peak_mem_kind, "device": dev.type, "device_name": dev.name,
         "dtype": dev.dtype, "model": "base + adapter (PEFT, unmerged)"})


@register_check("parity")
def parity(ctx: ValidationContext) -> CheckResult:
    """Unmerged vs merged logits on the first eval texts; merged vs quantized KL when given."""
    from registry.validation import forward as fw

    if ctx.not_loadable:
        return CheckResult("parity", "skipped", f"skipped: {ctx.not_loadable}")
    assert ctx.loaded is not None and ctx.device is not None, "quality runs first"
    adapter_dir, _ = ctx.require_adapter()
    dev, opts = ctx.device, ctx.options
    parity_batches = fw.make_batches(
        [row[mask.bool()].tolist() for ids, mask in ctx.loaded.batches for row, mask in
         zip(ids.cpu(), mask.cpu(), strict=True)][:PARITY_SEQUENCES],
        PARITY_SEQUENCES, dev.type)
    model = ctx.loaded.model
    unmerged = fw.collect_logits(model, parity_batches)
    ctx.loaded.model = None  # from here the merged model (in place, or loaded) replaces it
    if opts.merged is not None:
        how = f"merged model at {opts.merged}"
        del model
        fw.release(dev.type)
        merged_model = fw.load_causal_lm(opts.merged, dev.type, dev.dtype)
    else:
        merged_model, how = fw.merge_unmerged(model, adapter_dir, ctx.base)
        del model
    merged = fw.collect_logits(merged_model, parity_batches)
    max_abs, mean_abs = fw.logit_difference(unmerged, merged)
    ctx.figures.update(parity_max_abs=max_abs, parity_mean_abs=mean_abs)
    details: dict[str, Any] = {"merged_with": how, "positions": int(unmerged.shape[0])}
    summary = (f"unmerged vs merged logits: max |diff| {max_abs:.3g}, mean {mean_abs:.3g} "
               f"({how})")
    if opts.quantized is not None:
        del merged_model
        fw.release(dev.type)
        quant_model = fw.load_causal_lm(opts.quantized, dev.type, dev.dtype)
        quant = fw.collect_logits(quant_model, parity_batches)
        del quant_model
        kl, agree = fw.kl_and_top1(merged, quant)
        ctx.figures.update(kl_quant=kl, quant_top1_agree=agree)
        details["quantized"] = str(opts.quantized)
        summary += f"; merged vs quantized: KL {kl:.3g}, top-1 agreement {agree:.1%}"
    return CheckResult("parity", "passed", summary, details)
