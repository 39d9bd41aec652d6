"""Does an adapter fit a base model? Decided from safetensors headers, no weights loaded.

Names that differ between the adapter and the checkpoint go through registry.keymap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from registry.checkpoint import Checkpoint
from registry.errors import IncompatibleBase
from registry.keymap import KeyMap, identity_map, key_map, module_tensor_name, saved_target
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


@dataclass
class Compatibility:
    """How an adapter fits a base: names mapped through transformers, and new heads."""

    keymap: KeyMap
    new_heads: list[str] = field(default_factory=list)  # saved modules the base lacks
    renamed: dict[str, str] = field(default_factory=dict)  # module -> checkpoint tensor
    fused: list[str] = field(default_factory=list)  # modules on tensors transformers fuses


def check_compatible(adapter: AdapterDir, ckpt: Checkpoint) -> Compatibility:
    """Raise IncompatibleBase naming the first module whose weight is missing or misshapen.

    Module names go through registry.keymap, so an adapter trained on a task-head model
    (`bert.encoder...`, a new `classifier`) fits the headless checkpoint it was loaded from.
    """
    if adapter.peft_type in PROMPT_METHODS:
        return Compatibility(identity_map(()))
    km = key_map(adapter, ckpt)
    report = Compatibility(km)
    base = ckpt.tensors
    for module in adapter.modules:
        key = module_tensor_name(adapter, module)
        stored = km.checkpoint_name(key)
        if stored is None and km.fused_reason(key) is not None:
            report.fused.append(module)  # PEFT loads it; merge refuses it with the reason
            continue
        info = base.get(stored) if stored is not None else None
        if stored is None or info is None:
            raise IncompatibleBase(module, expected_base_shape(adapter, module), None)
        if stored != key:
            report.renamed[module] = stored
        if key.endswith(".weight"):  # a targeted parameter (MoE experts) has its own layout
            _check_module_shape(adapter, module, tuple(info.shape))
    for key, tinfo in adapter.extra_tensors.items():
        # modules_to_save weights (and saved embedding layers) replace base tensors 1:1
        target = saved_target(key)
        saved_as = km.checkpoint_name(target)
        if saved_as is None:
            want = km.model_shapes.get(km.model_name(target))
            if want is not None and tuple(want) != tuple(tinfo.shape):
                raise IncompatibleBase(target.rsplit(".", 1)[0], tuple(tinfo.shape),
                                       tuple(want), "the model class has another head size")
            head = target.rsplit(".", 1)[0]
            if head not in report.new_heads:
                report.new_heads.append(head)
            continue
        base_info = base[saved_as]
        if tuple(base_info.shape) != tuple(tinfo.shape):
            raise IncompatibleBase(target.rsplit(".", 1)[0], tuple(tinfo.shape),
                                   tuple(base_info.shape))
    return report


def _check_module_shape(adapter: AdapterDir, module: str, shape: tuple[int, ...]) -> None:
    expected = expected_base_shape(adapter, module)
    mod = adapter.modules[module]
    if expected is not None and shape != expected:
        raise IncompatibleBase(module, expected, shape)
    if adapter.peft_type == "IA3":
        vec = mod.shape("ia3_l")
        if vec is not None and len(vec) == 2 and len(shape) == 2 and not _broadcasts(vec, shape):
            raise IncompatibleBase(module, tuple(vec), shape,
                                   "IA3 vector does not match the weight")
    problem = _new_method_shape_problem(adapter, mod, shape)
    if problem is not None:
        raise IncompatibleBase(module, None, shape, problem)
    mag = mod.shape("lora_magnitude_vector")
    if mag is not None and len(shape) >= 1:
        if "lora_embedding_A" in mod.parts:
            out_dim = shape[1]  # an embedding is (num_embeddings, dim); DoRA scales per dim
        else:
            out_dim = shape[1] if _stored_in_out(adapter, mod, shape) else shape[0]
        if mag[0] != out_dim:
            raise IncompatibleBase(module, tuple(mag), shape,
                                   "DoRA magnitude does not match the output size")


def _new_method_shape_problem(
    adapter: AdapterDir, mod: ModuleFactors, shape: tuple[int, ...]
) -> str | None:
    """Shape checks of VeRA, FourierFT, OFT, BOFT and HRA against a 2-D (out, in) weight."""
    method = adapter.peft_type
    if method not in {"VERA", "FOURIERFT", "OFT", "BOFT", "HRA"} or len(shape) != 2:
        return None
    out_f, in_f = shape[::-1] if adapter.fan_in_fan_out else shape
    if method == "VERA":
        lam = mod.shape("vera_lambda_b")
        proj_a = adapter.shared_tensors.get("base_model.vera_A")
        proj_b = adapter.shared_tensors.get("base_model.vera_B")
        if lam is not None and lam[0] != out_f:
            return f"vera_lambda_b has {lam[0]} entries for {out_f} outputs"
        if proj_a is not None and proj_a.shape[1] < in_f:
            return f"vera_A covers {proj_a.shape[1]} inputs, fewer than {in_f}"
        if proj_b is not None and proj_b.shape[0] < out_f:
            return f"vera_B covers {proj_b.shape[0]} outputs, fewer than {out_f}"
    elif method == "FOURIERFT":
        spec = mod.shape("fourierft_spectrum")
        if spec is not None and spec[0] > out_f * in_f:
            return f"{spec[0]} frequencies do not fit a {out_f} x {in_f} spectrum"
    elif method == "OFT":
        rot = mod.shape("oft_R")
        if rot is not None and len(rot) == 2 and not adapter.config.get("block_share"):
            size = (1 + math.isqrt(1 + 8 * rot[1])) // 2
            if rot[0] * size != in_f:
                return f"{rot[0]} OFT blocks of {size} do not cover {in_f} inputs"
    elif method == "BOFT":
        rot, scale = mod.shape("boft_R"), mod.shape("boft_s")
        if rot is not None and len(rot) == 4 and rot[1] * rot[2] != in_f:
            return f"{rot[1]} BOFT blocks of {rot[2]} do not cover {in_f} inputs"
        if scale is not None and scale[0] != out_f:
            return f"boft_s has {scale[0]} entries for {out_f} outputs"
    elif method == "HRA":
        u = mod.shape("hra_u")
        if u is not None and u[0] != in_f:
            return f"hra_u has {u[0]} rows for {in_f} inputs"
    return None


def _broadcasts(vec: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """An IA3 vector scales rows (out, 1) or input columns (1, in) of a weight stored as
    (out, in), or the same transposed for GPT-2's Conv1D, which stores (in, out)."""
    def fits(v: tuple[int, ...], s: tuple[int, ...]) -> bool:
        return v[0] in (1, s[0]) and v[1] in (1, s[1]) and max(v) > 1 or v == (1, 1)
    return fits(vec, shape) or fits(vec[::-1], shape)


def _stored_in_out(adapter: AdapterDir, mod: ModuleFactors, shape: tuple[int, ...]) -> bool:
    """Whether this weight is stored (in, out) like Conv1D: from the factors when unambiguous."""
    a, b = mod.shape("lora_A"), mod.shape("lora_B")
    if a is not None and b is not None and len(shape) == 2 and b[0] != a[1]:
        return shape == (a[1], b[0])
    return adapter.fan_in_fan_out
