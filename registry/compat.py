"""Does an adapter fit a base model? Decided from safetensors headers alone, no weights loaded."""

from __future__ import annotations

import math

from registry.checkpoint import Checkpoint
from registry.errors import IncompatibleBase
from registry.peft_dir import PROMPT_METHODS, AdapterDir, ModuleFactors


def expected_base_shape(adapter: AdapterDir, module: str) -> tuple[int, ...] | None:
    """The shape of `<module>.weight` that the adapter's factors imply (None when unknown)."""
    mod = adapter.modules[module]
    s = mod.shape
    method = adapter.peft_type
    if method in {"LORA", "ADALORA"}:
        if "lora_embedding_A" in mod.parts:
            a, b = s("lora_embedding_A"), s("lora_embedding_B")
            return None if a is None or b is None else (a[1], b[0])
        a, b = s("lora_A"), s("lora_B")
        if a is None or b is None:
            return None
        if len(a) == 4:  # Conv2d: A is (r, in, kh, kw), B is (out, r, 1, 1)
            return (b[0], a[1], a[2], a[3])
        shape = (b[0], a[1])
        return shape[::-1] if adapter.fan_in_fan_out else shape
    if method == "LOHA":
        a, b = s("hada_w1_a"), s("hada_w1_b")
        if a is None or b is None:
            return None
        if s("hada_t1") is not None:
            return None
        return (a[0], b[1])
    if method == "LOKR":
        w1 = _lokr_shape(mod, "1")
        w2 = _lokr_shape(mod, "2")
        if w1 is None or w2 is None:
            return None
        return (w1[0] * w2[0], w1[1] * w2[1])
    return None


def _lokr_shape(mod: ModuleFactors, i: str) -> tuple[int, int] | None:
    full = mod.shape(f"lokr_w{i}")
    if full is not None and len(full) >= 2:
        return (full[0], math.prod(full[1:]))
    a, b = mod.shape(f"lokr_w{i}_a"), mod.shape(f"lokr_w{i}_b")
    if a is None or b is None:
        return None
    return (a[0], math.prod(b[1:]))


def check_compatible(adapter: AdapterDir, ckpt: Checkpoint) -> None:
    """Raise IncompatibleBase naming the first module whose weight is missing or misshapen."""
    if adapter.peft_type in PROMPT_METHODS:
        return
    base = ckpt.tensors
    for module in adapter.modules:
        key = f"{module}.weight"
        info = base.get(key)
        if info is None:
            raise IncompatibleBase(module, expected_base_shape(adapter, module), None)
        expected = expected_base_shape(adapter, module)
        mod = adapter.modules[module]
        if expected is not None and tuple(info.shape) != expected:
            raise IncompatibleBase(module, expected, tuple(info.shape))
        if adapter.peft_type == "IA3":
            vec = mod.shape("ia3_l")
            if vec is not None and len(vec) == 2 and len(info.shape) == 2:
                # (1, in) scales input columns (feed-forward modules); (out, 1) scales rows
                feedforward = vec[0] == 1 and vec[1] != 1
                if (vec[1] != info.shape[1]) if feedforward else (vec[0] != info.shape[0]):
                    raise IncompatibleBase(module, tuple(vec), tuple(info.shape),
                                           "IA3 vector does not match the weight")
        mag = mod.shape("lora_magnitude_vector")
        if mag is not None and len(info.shape) >= 1:
            out_dim = info.shape[1] if adapter.fan_in_fan_out else info.shape[0]
            if mag[0] != out_dim:
                raise IncompatibleBase(module, tuple(mag), tuple(info.shape),
                                       "DoRA magnitude does not match the output size")
    for key, tinfo in adapter.extra_tensors.items():
        # modules_to_save weights (and saved embedding layers) replace base tensors 1:1
        target = key.replace(".modules_to_save.", ".").replace(".base_layer.", ".")
        base_info = base.get(target)
        if base_info is None:
            continue
        if tuple(base_info.shape) != tuple(tinfo.shape):
            raise IncompatibleBase(target.rsplit(".", 1)[0], tuple(tinfo.shape),
                                   tuple(base_info.shape))
