"""Write a PEFT LoRA adapter as a llama.cpp LoRA GGUF (what `llama-server --lora` and Ollama load).

Pure: an adapter directory and the base model's `config.json` in, one `.gguf` file out. The
tensor names and transforms follow llama.cpp's `convert_lora_to_gguf.py` (which reuses
`convert_hf_to_gguf.py`'s model classes): the `gguf` package's tensor-name map for the base's
architecture, and the Llama-family q/k row permutation applied to `lora_B`.

Scaling: llama.cpp computes `scale = alpha / rank` per tensor (rank read from the tensor), or
uses 1 when `adapter.lora.alpha` is 0. Plain LoRA (one alpha; ranks may vary per module) is
written as the converter writes it. rsLoRA and `alpha_pattern` cannot be said with one alpha,
so PEFT's exact per-module scale is folded into `lora_b` and alpha is written as 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import (
    AlreadyExists,
    IncompatibleBase,
    InvalidModel,
    MissingDependency,
    UnsupportedMethod,
)
from registry.peft_dir import AdapterDir, read_adapter_dir

if TYPE_CHECKING:
    import numpy as np
    import torch

# HF architecture -> (GGUF architecture name, Llama q/k permutation), as convert_hf_to_gguf.py
# registers them (LlamaModel.undo_permute; Qwen2/Qwen3/Gemma/Gemma2 keep HF row order).
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
    "Qwen3ForCausalLM": ("qwen3", False),
    "GemmaForCausalLM": ("gemma", False),
    "Gemma2ForCausalLM": ("gemma2", False),
    # Fused projections stay fused: qkv_proj -> attn_qkv, gate_up_proj -> ffn_up (llama.cpp
    # splits them at run time), as Phi3MiniModel maps them.
    "Phi3ForCausalLM": ("phi3", False),
}
# Modules whose LoRA llama.cpp's converter drops or mis-handles: token embeddings need a
# transposed layout and lm_head is ignored when tied (llama.cpp#9065).
EMBEDDING_MODULES = ("embed_tokens", "lm_head", "wte", "embed_out", "word_embeddings")
OUTTYPES = ("f32", "f16")


@dataclass(frozen=True)
class GGUFExportOptions:
    """How to write the file. provenance: extra `adapt.*` string metadata (ref, digest, ...)."""

    outtype: str = "f32"
    name: str | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outtype not in OUTTYPES:
            from registry.errors import UsageError

            raise UsageError(f"unknown GGUF outtype {self.outtype!r}", f"use one of {OUTTYPES}")


@dataclass(frozen=True)
class GGUFTensorPlan:
    """One adapted module and the two GGUF tensors it becomes."""

    module: str
    gguf_name: str  # e.g. blk.0.attn_q.weight (the tensors are <gguf_name>.lora_a / .lora_b)
    rank: int
    peft_scale: float
    permute_heads: int | None  # q/k: heads to permute lora_B rows by; None: no permutation


@dataclass(frozen=True)
class GGUFPlan:
    """What an export will write, decided from headers and configs alone (no tensor data)."""

    architecture: str  # GGUF architecture, e.g. "llama"
    hf_architecture: str
    alpha: float  # adapter.lora.alpha as written (0 when scales are folded into lora_b)
    scale_folded: bool
    tensors: tuple[GGUFTensorPlan, ...]


@dataclass(frozen=True)
class GGUFExportResult:
    path: Path
    plan: GGUFPlan
    bytes: int


def import_gguf() -> Any:
    """The `gguf` package (llama.cpp's gguf-py), or a MissingDependency that says how to get it."""
    try:
        import gguf
    except ImportError:
        raise MissingDependency("gguf", "write llama.cpp GGUF adapters") from None
    return gguf


def read_base_config(base_dir: str | Path) -> dict[str, Any]:
    """The base model's config.json (all the converter needs from the base)."""
    path = Path(base_dir) / "config.json"
    if not path.is_file():
        raise InvalidModel(base_dir, "no config.json", "pass the base model's directory")
    try:
        from registry.safeparse import load_json

        data = load_json(path.read_bytes())
    except ValueError as error:  # registry.safeparse: malformed, too deep, NaN, too large
        raise InvalidModel(base_dir, f"config.json is not usable: {error}") from None
    if not isinstance(data, dict):
        raise InvalidModel(base_dir, "config.json is not an object")
    return data


def hf_architecture(config: Mapping[str, Any]) -> str:
    archs = config.get("architectures")
    if isinstance(archs, list) and archs:
        return str(archs[0])
    return str(config.get("model_type") or "unknown")


def gguf_blockers(adapter: AdapterDir) -> list[str]:
    """Why this adapter cannot be a GGUF LoRA, one reason per line (empty when it can)."""
    reasons: list[str] = []
    method = adapter.method
    if method == "DORA":
        reasons.append(
            "DoRA magnitude vectors have no GGUF LoRA form "
            "(turn it into a plain LoRA with `adapt convert` first)"
        )
    elif method != "LORA":
        reasons.append(f"{method} is not LoRA; llama.cpp GGUF adapters hold only lora_a/lora_b")
    for name, mod in sorted(adapter.modules.items()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in EMBEDDING_MODULES or "lora_embedding_A" in mod.parts:
            reasons.append(f"embedding/lm_head LoRA on {name} is not exported by llama.cpp")
            break
    if adapter.modules_to_save or adapter.extra_tensors:
        saved = adapter.modules_to_save or sorted(adapter.extra_tensors)[:3]
        reasons.append(
            f"full trained modules ({', '.join(saved)}) cannot be carried by a GGUF LoRA "
            "(llama.cpp#11554); retrain without modules_to_save or merge instead"
        )
    if any(part.endswith(".bias") for mod in adapter.modules.values() for part in mod.parts):
        reasons.append("LoRA bias (lora_bias=True) has no GGUF LoRA tensor")
    if adapter.fan_in_fan_out:
        reasons.append("fan_in_fan_out (Conv1D) adapters are not supported by this exporter")
    return reasons


def plan_gguf_export(adapter: AdapterDir, base_config: Mapping[str, Any]) -> GGUFPlan:
    """Map every adapted module to its GGUF tensor; refuse what GGUF LoRA cannot express."""
    gguf = import_gguf()

    reasons = gguf_blockers(adapter)
    if reasons:
        raise UnsupportedMethod(adapter.method, "exported to GGUF", reasons[0])
    hf_arch = hf_architecture(base_config)
    if hf_arch not in ARCHITECTURES:
        raise UnsupportedMethod(
            adapter.method, "exported to GGUF",
            f"base architecture {hf_arch} is not one this exporter maps "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})",
        )
    arch_name, permute = ARCHITECTURES[hf_arch]
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    n_blocks = int(base_config.get("num_hidden_layers") or 0)
    n_head = int(base_config.get("num_attention_heads") or 0)
    n_kv = int(base_config.get("num_key_value_heads") or n_head)
    name_map = gguf.get_tensor_name_map(arch, n_blocks)

    alpha = adapter.alpha if adapter.alpha is not None else float(adapter.rank or 8)
    plans: list[GGUFTensorPlan] = []
    exact_with_alpha = True
    for module in sorted(adapter.modules):
        mod = adapter.modules[module]
        if "lora_A" not in mod.parts or "lora_B" not in mod.parts:
            raise UnsupportedMethod("LORA", "exported to GGUF", f"{module} lacks lora_A/lora_B")
        key = module.removeprefix("base_model.model.")
        gname = name_map.get_name(key + ".weight", try_suffixes=(".weight",))
        if gname is None:
            raise UnsupportedMethod(
                "LORA", "exported to GGUF",
                f"module {key} has no llama.cpp tensor in architecture {arch_name}",
            )
        r, _ = adapter.rank_alpha(module)
        rank = int((mod.shape("lora_A") or (r,))[0])
        scale = adapter.lora_scale(module)
        # llama.cpp's scale is alpha / (rank of the tensor): exact when PEFT's is the same.
        if not math.isclose(scale, alpha / rank, rel_tol=1e-7, abs_tol=0.0):
            exact_with_alpha = False
        heads: int | None = None
        if permute and key.endswith("q_proj"):
            heads = n_head
        elif permute and key.endswith("k_proj"):
            heads = n_kv
        plans.append(GGUFTensorPlan(module, gname, rank, scale, heads))
    if not plans:
        raise UnsupportedMethod("LORA", "exported to GGUF", "the adapter has no LoRA modules")
    return GGUFPlan(
        architecture=arch_name,
        hf_architecture=hf_arch,
        alpha=alpha if exact_with_alpha else 0.0,
        scale_folded=not exact_with_alpha,
        tensors=tuple(plans),
    )


def permute_rows(b: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf's LlamaModel.permute on the output rows (lora_B carries them)."""
    out = b.shape[0]
    return b.reshape(n_head, 2, out // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def lora_gguf_tensors(
    adapter: AdapterDir, plan: GGUFPlan
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """GGUF name -> (lora_a, lora_b) in float32, transformed and (if folded) scaled."""
    import torch
    from safetensors import safe_open

    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with safe_open(str(adapter.weights_path), framework="pt") as f:
        for t in plan.tensors:
            mod = adapter.modules[t.module]
            a = f.get_tensor(mod.parts["lora_A"].name).to(torch.float32)
            b = f.get_tensor(mod.parts["lora_B"].name).to(torch.float32)
            if plan.scale_folded:
                b = b * t.peft_scale
            if t.permute_heads is not None:
                b = permute_rows(b, t.permute_heads)
            out[t.gguf_name] = (a.contiguous(), b.contiguous())
    return out


def export_lora_gguf(
    adapter_dir: str | Path,
    base_dir: str | Path,
    out: str | Path,
    options: GGUFExportOptions | None = None,
) -> GGUFExportResult:
    """Write `adapter_dir` as a llama.cpp LoRA GGUF at `out` (a new file), atomically.

    base_dir: the base model's directory (its config.json; weights, when present, are used to
    check shapes).
    """
    gguf = import_gguf()
    options = options or GGUFExportOptions()
    out = Path(out)
    if out.exists():
        raise AlreadyExists(str(out), "choose a new output file")
    adapter = read_adapter_dir(adapter_dir)
    base_config = read_base_config(base_dir)
    plan = plan_gguf_export(adapter, base_config)
    _check_shapes(adapter, plan, Path(base_dir))
    tensors = lora_gguf_tensors(adapter, plan)

    np_dtype = _np_dtype(options.outtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, plan.architecture)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        # The same general.* keys the converter writes, from the adapter's model card.
        metadata = gguf.Metadata.load(None, Path(adapter_dir), None, 0)
        metadata.name = options.name or metadata.name or Path(adapter_dir).name
        metadata.set_gguf_meta_model(writer)
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(plan.alpha))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in sorted(options.provenance.items()):
            writer.add_string(f"adapt.{key}", str(value))
        writer.add_bool("adapt.scale_folded", plan.scale_folded)
        for name in sorted(tensors):
            a, b = tensors[name]
            writer.add_tensor(f"{name}.lora_a", a.numpy().astype(np_dtype))
            writer.add_tensor(f"{name}.lora_b", b.numpy().astype(np_dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return GGUFExportResult(out, plan, out.stat().st_size)


def _np_dtype(outtype: str) -> np.dtype[Any]:
    import numpy as np

    return np.dtype(np.float16 if outtype == "f16" else np.float32)


def _check_shapes(adapter: AdapterDir, plan: GGUFPlan, base_dir: Path) -> None:
    """With base weights at hand, each module's delta must fit the base weight it adapts."""
    if not any(base_dir.glob("*.safetensors")):
        return
    from registry.checkpoint import open_checkpoint

    base = open_checkpoint(base_dir).tensors
    for t in plan.tensors:
        mod = adapter.modules[t.module]
        key = t.module.removeprefix("base_model.model.") + ".weight"
        a, b = mod.shape("lora_A"), mod.shape("lora_B")
        expected = (b[0], a[1]) if a and b else None
        info = base.get(key)
        if info is None:
            raise IncompatibleBase(key, expected, None)
        if expected is not None and tuple(info.shape) != expected:
            raise IncompatibleBase(key, expected, tuple(info.shape))


def write_ollama_modelfile(out_dir: Path, from_model: str, adapter_file: str) -> Path:
    """Ollama's Modelfile for a base plus a GGUF LoRA (FROM the base, ADAPTER the file)."""
    path = out_dir / "Modelfile"
    path.write_text(f"FROM {from_model}\nADAPTER ./{adapter_file}\n", encoding="utf-8")
    return path
