"""The torch side of a validation run: load models, score eval tokens, compare logits, time passes.

Everything here imports torch/transformers/peft inside functions: the CLI loads this module
only when a run gets that far.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import InvalidAdapter, InvalidModel, UsageError

if TYPE_CHECKING:
    import torch

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}
Batch = tuple["torch.Tensor", "torch.Tensor"]  # input_ids, attention_mask


@dataclass(frozen=True)
class ForwardMeasure:
    """Throughput and memory of one fixed forward pass, timed over repeats."""

    tokens_per_s: float
    latency_ms: float  # median of the repeats
    peak_mem_mb: float
    peak_mem_kind: str  # "cuda max_memory_allocated" or "process peak RSS"
    batch: int
    length: int
    repeats: int


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; refuse 'cuda' without a CUDA device."""
    if device not in {"auto", "cuda", "cpu"}:
        raise UsageError(f"unknown device {device!r}", "use auto, cuda or cpu")
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA device",
                         "use --device auto or cpu, or install a CUDA build of torch")
    return device


def resolve_dtype(dtype: str | None, device: str) -> str:
    """bf16 on GPU and float32 on CPU unless told otherwise."""
    if dtype is None:
        return "bfloat16" if device == "cuda" else "float32"
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}", "use float32, bfloat16 or float16")
    return DTYPES[dtype]


def device_name(device: str) -> str:
    import platform

    import torch

    if device == "cuda":
        return str(torch.cuda.get_device_name(torch.cuda.current_device()))
    return platform.processor() or platform.machine() or "cpu"


def load_causal_lm(path: Path, device: str, dtype: str) -> Any:
    """A causal LM from a directory, on `device`, in eval mode (quantized configs honoured)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # the run has its own progress; transformers' per-load bars would clutter stderr
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=getattr(torch, dtype), device_map={"": device}
        )
    except Exception as error:  # transformers raises OSError/ValueError/KeyError variants
        raise InvalidModel(path, f"transformers could not load it: {error}",
                           "pass a causal LM directory with config.json and safetensors"
                           ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval()


def attach_adapter(model: Any, adapter_dir: Path) -> Any:
    """Wrap a loaded base with the PEFT adapter at `adapter_dir` (unmerged)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False).eval()
    except Exception as error:  # PEFT raises ValueError/KeyError/RuntimeError variants
        raise InvalidAdapter(adapter_dir, f"PEFT could not load it onto the base: {error}"
                             ) from None


def vocab_size(model: Any) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


def max_positions(model: Any, wanted: int) -> int:
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions",
                                                                        None)
    return min(wanted, int(limit)) if limit else wanted


def make_batches(sequences: list[list[int]], batch_size: int, device: str) -> list[Batch]:
    """Right-padded batches with attention masks (padding positions are never scored)."""
    import torch

    out: list[Batch] = []
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i : i + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        out.append((ids.to(device), mask.to(device)))
    return out


def _scored_logits(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits at every position that predicts a real next token, and those tokens."""
    ids, mask = batch
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    valid = mask[:, 1:].bool()
    return logits[:, :-1][valid].float(), ids[:, 1:][valid]


def sum_loss(model: Any, batches: list[Batch]) -> tuple[float, int]:
    """Summed next-token cross-entropy (nats) over all scored positions, and their count."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            logits, labels = _scored_logits(model, batch)
            total += float(F.cross_entropy(logits, labels, reduction="sum"))
            count += int(labels.numel())
    return total, count


def collect_logits(model: Any, batches: list[Batch]) -> torch.Tensor:
    """Float32 logits on CPU at every scored position: (positions, vocab)."""
    import torch

    with torch.inference_mode():
        parts = [_scored_logits(model, b)[0].cpu() for b in batches]
    return torch.cat(parts)


def logit_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Max and mean absolute difference between two logit tensors."""
    diff = (a.double() - b.double()).abs()
    return float(diff.max()), float(diff.mean())


def kl_and_top1(p_logits: torch.Tensor, q_logits: torch.Tensor) -> tuple[float, float]:
    """Mean KL(P || Q) per position of softmax distributions, and top-1 agreement."""
    import torch.nn.functional as F

    log_p = F.log_softmax(p_logits.double(), dim=-1)
    log_q = F.log_softmax(q_logits.double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    agree = (p_logits.argmax(-1) == q_logits.argmax(-1)).double().mean()
    return max(0.0, float(kl)), float(agree)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def measure_forward(model: Any, *, vocab: int, batch: int, length: int, device: str,
                    repeats: int = 3, warmup: int = 1, seed: int = 0) -> ForwardMeasure:
    """Time `repeats` forward passes of a fixed random (batch, length) input, after warmup.

    Peak memory is torch.cuda.max_memory_allocated over these passes on GPU; on CPU it is the
    process's peak RSS (which includes everything loaded so far: there is no way to reset it).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=gen).to(device)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"
    return ForwardMeasure(batch * length / median, median * 1000, peak, kind, batch, length,
                          repeats)


def merge_unmerged(peft_model: Any, adapter_dir: Path, base_dir: Path) -> tuple[Any, str]:
    """Turn the loaded base + adapter into the merged model in place; returns (model, how).

    With adapt's own merge (registry.ops.merge.iter_merged_tensors) when it handles the
    adapter and the checkpoint names match the model's, so parity tests what `adapt merge`
    writes; otherwise PEFT's merge_and_unload. Both work in place: no second model copy.
    """
    from registry.errors import UnsupportedMethod

    base_keys = set(peft_model.get_base_model().state_dict())
    from registry.peft_dir import read_adapter_dir

    adapter = read_adapter_dir(adapter_dir)
    names_match = all(f"{m}.base_layer.weight" in base_keys or f"{m}.weight" in base_keys
                      for m in adapter.modules)
    if names_match:
        try:
            from registry.ops.merge import iter_merged_tensors

            merged = iter_merged_tensors(adapter_dir, base_dir)  # checks before yielding
        except (ImportError, UnsupportedMethod):
            merged = None
        if merged is not None:
            return _load_merged(peft_model, merged), "adapt merge (iter_merged_tensors)"
    try:
        return peft_model.merge_and_unload(), "peft merge_and_unload"
    except Exception as error:  # PEFT raises ValueError for methods it cannot merge
        raise InvalidAdapter(adapter_dir, f"PEFT could not merge it: {error}") from None


def _load_merged(peft_model: Any, merged: Any) -> Any:
    """Drop the adapter layers (unload: weights untouched) and copy merged tensors in."""
    import torch

    model = peft_model.unload()
    params = model.state_dict()  # shares storage with the parameters
    unknown = []
    with torch.no_grad():
        for name, tensor in merged:
            target = params.get(name)
            if target is None:
                unknown.append(name)
                continue
            target.copy_(tensor.to(dtype=target.dtype))
    if unknown:
        raise InvalidModel("merged model", f"merged tensors the model does not have: "
                           f"{', '.join(unknown[:3])}")
    return model


def release(device: str) -> None:
    """Give freed model memory back before loading the next model."""
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
