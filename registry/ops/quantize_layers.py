"""One layer at a time: which weights become bitsandbytes layers, quantizing one, its error.

Weights are quantized with bitsandbytes' own functions and saved under the keys its
`_save_to_state_dict` writes. For each layer the error ||dequant(Q(W')) - W'|| is measured
relative to ||W'|| and, when the merge delta is known, relative to ||delta||; a rank-R
correction (a LoRA fitted to the residual) can be written beside the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.checkpoint import Checkpoint
from registry.errors import InvalidModel, MissingDependency, QuantizationUnavailable
from registry.io.dtypes import torch_dtype
from registry.ops.options import COMPUTE_DTYPES, QuantizeOptions
from registry.safetensors_header import DTYPE_SIZES

if TYPE_CHECKING:
    import torch

    from registry.io.shards import ShardWriter

# Exact SVD below this size; randomized (svd_lowrank) above, where a full SVD takes minutes.
_EXACT_SVD_MAX_DIM = 1024
_FLOAT_STORED = ("F16", "BF16", "F32", "F64")


@dataclass
class LayerError:
    """The rounding error of one quantized layer (Frobenius norms, float32)."""

    module: str
    shape: tuple[int, ...]
    weight_norm: float
    error_norm: float
    rel_error: float  # error / ||W'||
    delta_norm: float | None = None
    error_vs_delta: float | None = None  # error / ||delta||; None without a known nonzero delta
    compensated_error_norm: float | None = None
    compensated_rel_error: float | None = None
    compensated_error_vs_delta: float | None = None


@dataclass(frozen=True)
class QuantTarget:
    """A checkpoint weight that transformers turns into a bitsandbytes layer."""

    module: str  # the module's name in the model (what PEFT and skip patterns see)
    conv1d: bool  # GPT-2 style Conv1D: the stored weight is (in, out)


def check_bitsandbytes(to: str, blocksize: int) -> None:
    """Quantize a tiny tensor first: fail before any output exists if bitsandbytes cannot."""
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        raise MissingDependency("bitsandbytes", "requantize a model") from None
    import torch

    probe = torch.linspace(-1, 1, 2 * blocksize).reshape(2, blocksize)
    try:
        if to == "int8":
            bnbf.int8_vectorwise_quant(probe.half())
        else:
            packed, state = bnbf.quantize_4bit(probe, blocksize=blocksize, quant_type=to)
            bnbf.dequantize_4bit(packed, state)
    except Exception as error:  # bitsandbytes raises plain RuntimeErrors for missing backends
        raise QuantizationUnavailable(to, f"{type(error).__name__}: {error}") from None


def quantization_config(to: str, *, double_quant: bool = False, compute_dtype: str = "bf16",
                        skip_modules: Sequence[str] = ()) -> dict[str, Any]:
    """The `quantization_config` dict for config.json, built by transformers' BitsAndBytesConfig."""
    from transformers import BitsAndBytesConfig

    kwargs: dict[str, Any] = {"llm_int8_skip_modules": list(skip_modules)}
    if to == "int8":
        kwargs["load_in_8bit"] = True
    else:
        kwargs.update(load_in_4bit=True, bnb_4bit_quant_type=to,
                      bnb_4bit_use_double_quant=double_quant,
                      bnb_4bit_compute_dtype=COMPUTE_DTYPES[compute_dtype])
    config: dict[str, Any] = BitsAndBytesConfig(**kwargs).to_dict()
    return config


def linear_targets(model_dir: Path, config: dict[str, Any], names: Sequence[str],
                   skip_modules: Sequence[str]) -> tuple[dict[str, QuantTarget], list[str]]:
    """Checkpoint weight name -> target, for exactly the layers transformers will convert.

    Returns the targets and the skip patterns to write into the config: the user's patterns
    plus every Linear module whose weight is not in the checkpoint (e.g. a tied lm_head).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.quantizers_utils import should_convert_module

    try:
        cfg = AutoConfig.for_model(**{k: v for k, v in config.items()
                                      if k not in ("quantization_config",)})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except Exception as error:  # unknown model_type, or not a causal LM
        raise InvalidModel(model_dir, f"transformers cannot build this model: {error}",
                           "requantize a causal LM that transformers supports") from None
    prefix = getattr(model, "base_model_prefix", "") or ""
    keep_fp32 = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    patterns = list(skip_modules) + keep_fp32
    linears = {n: isinstance(m, Conv1D) for n, m in model.named_modules()
               if type(m) is torch.nn.Linear or isinstance(m, Conv1D)}
    present = set(names)
    targets: dict[str, QuantTarget] = {}
    found: set[str] = set()
    for key in names:
        if not key.endswith(".weight"):
            continue
        module = key[: -len(".weight")]
        if module not in linears and prefix and f"{prefix}.{module}" in linears:
            module = f"{prefix}.{module}"
        if module not in linears:
            continue
        found.add(module)
        if should_convert_module(module, patterns):
            targets[key] = QuantTarget(module, linears[module])
    missing = [m for m in linears if m not in found and should_convert_module(m, patterns)
               and f"{m}.weight" not in present]
    return targets, list(skip_modules) + missing


def estimate_bytes(ckpt: Checkpoint, targets: dict[str, QuantTarget],
                   options: QuantizeOptions) -> int:
    """Bytes the quantized output (and its correction adapter) will take, roughly from above."""
    total = 0
    for name, info in ckpt.tensors.items():
        if name in targets:
            per = 0.5 if options.to != "int8" else 1.0
            total += (int(info.numel * per) + info.shape[0] * 4
                      + info.numel // options.blocksize * 4 + 512)
            if options.compensate_rank:
                total += options.compensate_rank * sum(info.shape) * 4
        else:
            total += int(info.numel * DTYPE_SIZES.get(info.dtype, 4))
    return total


# -- bitsandbytes -----------------------------------------------------------------------------
def quantize_weight(weight: torch.Tensor, to: str, *, double_quant: bool = False,
                    blocksize: int = 64) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Quantize one Linear weight (out, in) as bitsandbytes' Linear4bit / Linear8bitLt would.

    Returns the tensors to save under "<module>." (keys as bitsandbytes' own state dict writes
    them) and the dequantized weight (float32) that the loaded layer will compute with.
    """
    import bitsandbytes.functional as bnbf
    import torch

    if to == "int8":
        # Int8Params._quantize casts to float16 before its row-wise absmax quantization
        cb, scb, _ = bnbf.int8_vectorwise_quant(weight.contiguous().half())
        dequant: torch.Tensor = bnbf.int8_vectorwise_dequant(cb, scb).float()
        tensors = {"weight": cb, "SCB": scb, "weight_format": torch.tensor(0, dtype=torch.uint8)}
        return tensors, dequant
    packed, state = bnbf.quantize_4bit(weight.contiguous(), blocksize=blocksize, quant_type=to,
                                       compress_statistics=double_quant,
                                       quant_storage=torch.uint8)
    dequant = bnbf.dequantize_4bit(packed, state).float()
    tensors = {"weight": packed}
    for key, value in state.as_dict(packed=True).items():
        tensors[f"weight.{key}"] = value
    return tensors, dequant


def low_rank_factors(residual: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B @ A the best rank-`rank` approximation of `residual` (out, in)."""
    import torch

    rank = min(rank, *residual.shape)
    if min(residual.shape) <= _EXACT_SVD_MAX_DIM:
        u, s, vh = torch.linalg.svd(residual, full_matrices=False)
        v = vh.mH
    else:
        # a few power iterations: quantization residuals have a flat spectrum, so the
        # randomized range finder needs them to find the top directions
        u, s, v = torch.svd_lowrank(residual, q=min(rank + 16, *residual.shape), niter=6)
    b = (u[:, :rank] * s[:rank]).contiguous()
    a = v[:, :rank].mT.contiguous()
    return b, a


def torch_norm(tensor: torch.Tensor) -> float:
    """Frobenius norm in float64 accumulation (float32 sums drift on 4096x4096 matrices)."""
    import torch

    return float(torch.linalg.vector_norm(tensor.reshape(-1), dtype=torch.float64))


def quantize_layer(
    name: str,
    tensor: torch.Tensor,
    target: QuantTarget,
    stored_dtype: str,
    writer: ShardWriter,
    comp_writer: ShardWriter | None,
    base: torch.Tensor | None,
    options: QuantizeOptions,
) -> LayerError:
    """Quantize one weight, write its tensors (and correction), and measure the error.

    base: the weight before the merge (W), when known: errors are then also relative to W' - W.
    """
    reference = tensor.float()
    if target.conv1d:  # bitsandbytes layers are (out, in); transformers transposes Conv1D too
        reference = reference.mT
    reference = reference.contiguous()
    # quantize what `from_pretrained` of the merged model would see: the stored dtype
    stored = reference.to(torch_dtype(stored_dtype if stored_dtype in _FLOAT_STORED else "F32"))
    saved, dequant = quantize_weight(stored, options.to, double_quant=options.double_quant,
                                     blocksize=options.blocksize)
    module_key = name[: -len("weight")]
    for key, value in saved.items():
        writer.add(module_key + key, value)
    residual = reference - dequant
    del dequant, stored
    weight_norm = torch_norm(reference)
    error_norm = torch_norm(residual)
    delta_norm: float | None = None
    if base is not None:
        if target.conv1d:
            base = base.mT
        delta_norm = torch_norm(reference - base)
        del base
    layer = LayerError(
        module=target.module, shape=tuple(reference.shape), weight_norm=weight_norm,
        error_norm=error_norm, rel_error=norm_ratio(error_norm, weight_norm) or 0.0,
        delta_norm=delta_norm, error_vs_delta=norm_ratio(error_norm, delta_norm),
    )
    rank = options.compensate_rank
    if rank and comp_writer is not None:
        b, a = low_rank_factors(residual, rank)
        prefix = f"base_model.model.{target.module}"
        comp_writer.add(f"{prefix}.lora_A.weight", a)
        comp_writer.add(f"{prefix}.lora_B.weight", b)
        left = torch_norm(residual - b @ a)
        layer.compensated_error_norm = left
        layer.compensated_rel_error = norm_ratio(left, weight_norm)
        layer.compensated_error_vs_delta = norm_ratio(left, delta_norm)
    return layer


def write_compensation_config(directory: Path, out_dir: Path, rank: int,
                              modules: list[str]) -> None:
    """adapter_config.json for the correction: plain LoRA, scale 1 (alpha = r)."""
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(modules),
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        base_model_name_or_path=str(out_dir.resolve()), inference_mode=True)
    config.save_pretrained(str(directory))


# -- the error budget -------------------------------------------------------------------------
def norm_ratio(num: float, den: float | None) -> float | None:
    if den is None or den <= 0.0:
        return None
    return num / den


def overall_error(layers: list[LayerError]) -> dict[str, float | None]:
    """Errors over all quantized layers together: sqrt(sum err^2) / sqrt(sum ref^2)."""
    err2 = sum(x.error_norm ** 2 for x in layers)
    w2 = sum(x.weight_norm ** 2 for x in layers)
    with_delta = [x for x in layers if x.delta_norm]
    d2 = sum((x.delta_norm or 0.0) ** 2 for x in with_delta)
    derr2 = sum(x.error_norm ** 2 for x in with_delta)
    out: dict[str, float | None] = {
        "rel_error": norm_ratio(math.sqrt(err2), math.sqrt(w2)),
        "error_vs_delta": norm_ratio(math.sqrt(derr2), math.sqrt(d2)) if with_delta else None,
        "compensated_rel_error": None,
        "compensated_error_vs_delta": None,
        "layers_with_delta": float(len(with_delta)),
    }
    if layers and all(x.compensated_error_norm is not None for x in layers):
        c2 = sum((x.compensated_error_norm or 0.0) ** 2 for x in layers)
        out["compensated_rel_error"] = norm_ratio(math.sqrt(c2), math.sqrt(w2))
        if with_delta:
            dc2 = sum((x.compensated_error_norm or 0.0) ** 2 for x in with_delta)
            out["compensated_error_vs_delta"] = norm_ratio(math.sqrt(dc2), math.sqrt(d2))
    return out


def worst_layer(layers: list[LayerError]) -> dict[str, Any] | None:
    """The layer with the largest relative error, as the registry record shows it."""
    if not layers:
        return None
    worst = max(layers, key=lambda x: x.rel_error)
    return {"module": worst.module, "rel_error": worst.rel_error,
            "error_vs_delta": worst.error_vs_delta}


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """config.json of a transformers model directory, as a dict (InvalidModel otherwise)."""
    path = model_dir / "config.json"
    try:
        from registry.safeparse import load_json

        data = load_json(path.read_bytes())
    except FileNotFoundError:
        raise InvalidModel(model_dir, "no config.json",
                           "requantize a transformers model directory") from None
    except ValueError as error:  # registry.safeparse: malformed, too deep, NaN, too large
        raise InvalidModel(model_dir, f"config.json is not usable: {error}") from None
    if not isinstance(data, dict):
        raise InvalidModel(model_dir, "config.json is not a JSON object")
    return data
