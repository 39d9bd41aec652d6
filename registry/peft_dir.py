"""Read a PEFT adapter directory: its config, its tensors' headers, and per-module factors.

Everything here works from `adapter_config.json` and the safetensors header, without torch;
`load_tensors` is the one place that reads tensor data (and imports torch lazily).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import InvalidAdapter, NonFiniteTensor, PickleRefused
from registry.patterns import PatternError, check_pattern_keys, compile_regex
from registry.patterns import pattern_key as _bounded_pattern_key
from registry.safeparse import ParseLimitError, cap, load_json, read_limited
from registry.safetensors_header import HeaderError, SafetensorsHeader, TensorInfo, read_header

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"

# Methods whose weights are virtual tokens, not weight deltas.
PROMPT_METHODS = {"PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING", "CPT",
                  "CARTRIDGE"}
KNOWN_PEFT_TYPES = {
    "LORA", "ADALORA", "LOHA", "LOKR", "IA3", "OFT", "BOFT", "VERA", "FOURIERFT", "HRA", "BONE",
    "LN_TUNING", "POLY", "XLORA", "VBLORA", "RANDLORA", "SHIRA", "C3A", "MISS", "ROAD",
    "TRAINABLE_TOKENS", "WAVEFT", "DELORA", "OSF", "GRALORA", "LILY", "ADAPTION_PROMPT",
    # PEFT 0.21's other types: registered as they are; merge and convert refuse them by name
    "ADAMSS", "BEFT", "FROD", "PVERA", "GLORA", "UNILORA", "HIRA", "TINYLORA", "PSOFT", "PEANUT",
    "SHADOW", "SUPERTUNING", "DEFT",
} | PROMPT_METHODS

# The factor names each method stores per module, as they appear after the module path.
FACTOR_PARTS = (
    "lora_A", "lora_B", "lora_E", "lora_embedding_A", "lora_embedding_B",
    "lora_magnitude_vector", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1",
    "hada_t2", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
    "lokr_t2", "ia3_l", "vera_lambda_b", "vera_lambda_d", "fourierft_spectrum", "oft_R", "hra_u",
    "boft_R", "boft_s", "shira_weight", "shira_indices", "ln_tuning_layers",
    "miss_block", "c3a_kernel", "vblora_logits_A", "vblora_logits_B",
    "randlora_A", "randlora_B", "randlora_lambda", "randlora_gamma",
)
# Tensors one adapter shares across modules, saved once at the top level (VeRA's and RandLoRA's
# frozen random projections, VB-LoRA's vector bank): not module factors, not base tensors.
SHARED_KEYS = frozenset({"base_model.vera_A", "base_model.vera_B", "base_model.vblora_vector_bank",
                         "base_model.randlora_A", "base_model.randlora_B"})
_FACTOR_RE = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?P<part>"
    + "|".join(sorted(FACTOR_PARTS, key=len, reverse=True))
    + r")(?:\.(?P<param>weight|bias))?$"
)
_PREFIX = "base_model.model."


def strip_prefix(key: str) -> str:
    return key[len(_PREFIX) :] if key.startswith(_PREFIX) else key


@dataclass
class ModuleFactors:
    """The tensors one adapted module owns, by part name (`lora_A`, `lora_B.bias`, `ia3_l`...)."""

    module: str
    parts: dict[str, TensorInfo] = field(default_factory=dict)

    def shape(self, part: str) -> tuple[int, ...] | None:
        info = self.parts.get(part)
        return None if info is None else info.shape


@dataclass
class AdapterDir:
    """A parsed, checked PEFT adapter directory."""

    path: Path
    config: dict[str, Any]
    header: SafetensorsHeader
    modules: dict[str, ModuleFactors]
    extra_tensors: dict[str, TensorInfo]  # modules_to_save weights, saved embeddings, prompts
    shared_tensors: dict[str, TensorInfo] = field(default_factory=dict)  # see SHARED_KEYS

    # -- config facts ---------------------------------------------------------------------
    @property
    def weights_path(self) -> Path:
        return self.header.path

    @property
    def peft_type(self) -> str:
        return str(self.config.get("peft_type", "")).upper()

    @property
    def method(self) -> str:
        """PEFT type, with LoRA + use_dora reported as DORA."""
        if self.peft_type == "LORA" and self.config.get("use_dora"):
            return "DORA"
        return self.peft_type

    @property
    def rank(self) -> int | None:
        r = self.config.get("r")
        return int(r) if isinstance(r, int | float) else None

    @property
    def alpha(self) -> float | None:
        a = self.config.get("lora_alpha", self.config.get("alpha"))
        return float(a) if isinstance(a, int | float) else None

    @property
    def use_rslora(self) -> bool:
        return bool(self.config.get("use_rslora", False))

    @property
    def rank_pattern(self) -> dict[str, int]:
        return dict(self.config.get("rank_pattern") or {})

    @property
    def alpha_pattern(self) -> dict[str, float]:
        return dict(self.config.get("alpha_pattern") or {})

    @property
    def target_modules(self) -> list[str] | str | None:
        t = self.config.get("target_modules")
        if isinstance(t, list | tuple | set):
            return sorted(str(x) for x in t)
        return t

    @property
    def modules_to_save(self) -> list[str]:
        return sorted(self.config.get("modules_to_save") or [])

    @property
    def task_type(self) -> str | None:
        return self.config.get("task_type")

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.header.tensors.values())

    @property
    def size_bytes(self) -> int:
        return self.header.file_size

    @property
    def dtype(self) -> str:
        dtypes = sorted({t.dtype for t in self.header.tensors.values()})
        return "+".join(dtypes) if dtypes else "none"

    def files(self) -> list[Path]:
        """The files that make up this adapter (config, weights, and small extras)."""
        out = [self.path / CONFIG_NAME, self.weights_path]
        for extra in ("README.md", "adapt.json"):
            if (self.path / extra).is_file():
                out.append(self.path / extra)
        return out

    # -- per-module facts -------------------------------------------------------------------
    def rank_alpha(self, module: str) -> tuple[int, float]:
        """r and alpha for one module, honouring rank_pattern and alpha_pattern as PEFT does."""
        r = self.rank if self.rank is not None else 8
        alpha = self.alpha if self.alpha is not None else float(r)
        r_key = pattern_key(self.rank_pattern.keys(), module)
        a_key = pattern_key(self.alpha_pattern.keys(), module)
        return int(self.rank_pattern.get(r_key, r)), float(self.alpha_pattern.get(a_key, alpha))

    def lora_scale(self, module: str) -> float:
        """alpha / r, or alpha / sqrt(r) for rsLoRA (PEFT's `scaling`)."""
        r, alpha = self.rank_alpha(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def pattern_key(pattern_keys: Iterable[str], module: str) -> str:
    """The first pattern that matches `module` the way PEFT's get_pattern_key matches it.

    The keys come from a file: they run on a bounded matcher (registry.patterns), never on
    Python's backtracking engine, so `(.*)*X` cannot hang adapt.
    """
    return _bounded_pattern_key(pattern_keys, module)


def read_adapter_dir(
    path: str | Path, *, allow_pickle: bool = False, check: bool = True
) -> AdapterDir:
    """Parse `path` as a PEFT adapter directory and check its tensors against its config.

    allow_pickle: accept a directory with only `adapter_model.bin` (the caller converts it).
    """
    path = Path(path)
    if not path.exists():
        raise InvalidAdapter(path, "no such directory")
    if not path.is_dir():
        raise InvalidAdapter(path, "not a directory", "pass the adapter's directory")
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise InvalidAdapter(path, f"no {CONFIG_NAME}", "is this a PEFT adapter directory?")
    try:
        config = load_json(read_limited(config_path, CONFIG_MAX_BYTES),
                           max_bytes=CONFIG_MAX_BYTES)
    except PermissionError:
        raise InvalidAdapter(path, f"{CONFIG_NAME} is not readable") from None
    except ParseLimitError as error:
        raise InvalidAdapter(path, f"{CONFIG_NAME} is not usable: {error}") from None
    if not isinstance(config, dict):
        raise InvalidAdapter(path, f"{CONFIG_NAME} is not a JSON object")
    problem = config_problem(config)
    if problem:
        raise InvalidAdapter(path, f"{CONFIG_NAME}: {problem}")
    peft_type = str(config.get("peft_type", "")).upper()
    if not peft_type:
        raise InvalidAdapter(path, f"{CONFIG_NAME} has no peft_type")
    if peft_type not in KNOWN_PEFT_TYPES:
        raise InvalidAdapter(path, f"unknown peft_type {config.get('peft_type')!r}")
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        if (path / PICKLE_NAME).is_file():
            raise PickleRefused(path)
        raise InvalidAdapter(path, f"no {WEIGHTS_NAME}")
    try:
        header = read_header(weights)
    except HeaderError as error:
        raise InvalidAdapter(path, f"{WEIGHTS_NAME}: {error}") from None
    except PermissionError:
        raise InvalidAdapter(path, f"{WEIGHTS_NAME} is not readable") from None
    modules, extra = group_tensors(header.tensors)
    shared = {k: extra.pop(k) for k in sorted(extra) if k in SHARED_KEYS}
    adapter = AdapterDir(path, config, header, modules, extra, shared)
    if check:
        check_factors(adapter)
    return adapter


CONFIG_MAX_BYTES = 16 * 1024 * 1024
MAX_RANK = 1 << 20  # far above any real adapter; a guard against absurd values from a file
MAX_ALPHA = 1e9


def config_problem(config: Mapping[str, Any]) -> str | None:
    """What is wrong with the types and values of an adapter config's fields, or None.

    PEFT trusts these fields; a file may not: a string `modules_to_save` would be iterated as
    characters, `r = 0` divides by zero, a non-regular rank_pattern key could hang.
    """
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str):
        return "peft_type is not a string"
    for key in ("r", "lora_alpha", "alpha"):
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{key} is {type(value).__name__}, not a number"
        # OFT and BOFT save r = 0 when the block size decides the number of blocks
        low = 0 if peft_type.upper() in {"OFT", "BOFT"} else 1
        if key == "r" and (not float(value).is_integer() or not low <= value <= MAX_RANK):
            return f"r = {cap(repr(value), 40)} is not a positive integer up to {MAX_RANK}"
        if key != "r" and not (math.isfinite(value) and abs(value) <= MAX_ALPHA):
            return f"{key} = {cap(repr(value), 40)} is not a finite number up to {MAX_ALPHA:g}"
    for key, kind in (("rank_pattern", "rank"), ("alpha_pattern", "alpha")):
        patterns = config.get(key)
        if patterns is None:
            continue
        if not isinstance(patterns, dict):
            return f"{key} is {type(patterns).__name__}, not an object of pattern: {kind}"
        for pattern, value in patterns.items():
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and kind == "rank":
                ok = float(value).is_integer() and 1 <= value <= MAX_RANK
            if ok and kind == "alpha":
                ok = math.isfinite(value) and abs(value) <= MAX_ALPHA
            if not ok:
                return (f"{key}[{cap(repr(pattern), 60)}] = {cap(repr(value), 40)} is not a "
                        f"valid {kind}")
        try:
            check_pattern_keys(patterns)
        except PatternError as error:
            return f"{key}: {error}"
    for key in ("target_modules", "modules_to_save", "feedforward_modules"):
        value = config.get(key)
        if isinstance(value, str) and key == "feedforward_modules":
            try:  # adapt's IA3 merge runs it (registry.patterns.fullmatch)
                compile_regex(rf"(?:{value})\Z")
            except PatternError as error:
                return f"{key}: {error}"
            continue
        if value is None or (isinstance(value, str) and key == "target_modules"):
            continue  # PEFT reads a string target_modules as a regular expression; adapt never
        if isinstance(value, str):
            return (f"{key} is a string ({cap(repr(value), 40)}); PEFT expects a list of module "
                    f"names, e.g. [{cap(repr(value), 40)}]")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"{key} is not a list of module names"
    return None


def group_tensors(
    tensors: Mapping[str, TensorInfo],
) -> tuple[dict[str, ModuleFactors], dict[str, TensorInfo]]:
    modules: dict[str, ModuleFactors] = {}
    extra: dict[str, TensorInfo] = {}
    for key, info in tensors.items():
        m = _FACTOR_RE.match(key) if key not in SHARED_KEYS else None
        if not m:
            extra[strip_prefix(key)] = info
            continue
        part = m["part"] + (f".{m['param']}" if m["param"] == "bias" else "")
        modules.setdefault(m["module"], ModuleFactors(m["module"])).parts[part] = info
    return dict(sorted(modules.items())), extra


def check_factors(adapter: AdapterDir) -> None:
    """Every adapted module has all its factors, with shapes that agree with r and each other."""
    method = adapter.peft_type
    if method in PROMPT_METHODS:
        if not adapter.header.tensors:
            raise InvalidAdapter(adapter.path, "prompt adapter has no tensors")
        return
    if not adapter.modules and not adapter.extra_tensors:
        raise InvalidAdapter(adapter.path, "the weights file has no adapter tensors")
    for name, mod in adapter.modules.items():
        bad = _check_module(adapter, method, mod)
        if bad:
            raise InvalidAdapter(adapter.path, f"module {name}: {bad}")


def _check_module(adapter: AdapterDir, method: str, mod: ModuleFactors) -> str | None:
    s = mod.shape
    if method in {"LORA", "ADALORA"}:
        if "lora_embedding_A" in mod.parts or "lora_embedding_B" in mod.parts:
            a, b = s("lora_embedding_A"), s("lora_embedding_B")
            if a is None or b is None:
                return "has only one of lora_embedding_A / lora_embedding_B"
            if a[0] != b[1]:
                return f"lora_embedding_A {list(a)} and lora_embedding_B {list(b)} disagree on r"
            inner = a[0]
        else:
            a, b = s("lora_A"), s("lora_B")
            if a is None or b is None:
                return "has only one of lora_A / lora_B"
            if len(a) < 2 or len(b) < 2:
                return f"lora_A {list(a)} / lora_B {list(b)} are not matrices"
            if a[0] != b[1]:
                return f"lora_A {list(a)} and lora_B {list(b)} disagree on r"
            inner = a[0]
        if method == "LORA":
            r, _ = adapter.rank_alpha(mod.module)
            # LoRA on a fused parameter (target_parameters) stacks r ranks per expert
            stacked = bool(adapter.config.get("target_parameters")) and inner % r == 0
            if inner != r and not stacked:
                return f"factors have rank {inner} but the config says r={r}"
        else:
            e = s("lora_E")
            if e is None or e[0] != inner:
                return f"lora_E {e} does not match rank {inner}"
        mag = s("lora_magnitude_vector")
        if adapter.config.get("use_dora") and mag is None:
            return "use_dora is set but the DoRA magnitude vector is missing"
        if mag is not None and b is not None and mag[0] != b[0]:
            return f"magnitude vector {list(mag)} does not match output size {b[0]}"
    elif method == "LOHA":
        for i in ("1", "2"):
            a, b = s(f"hada_w{i}_a"), s(f"hada_w{i}_b")
            if a is None or b is None:
                return f"hada_w{i}_a / hada_w{i}_b missing"
            if s(f"hada_t{i}") is None and a[1] != b[0]:
                return f"hada_w{i}_a {list(a)} and hada_w{i}_b {list(b)} disagree on r"
    elif method == "LOKR":
        for i in ("1", "2"):
            full, a, b = s(f"lokr_w{i}"), s(f"lokr_w{i}_a"), s(f"lokr_w{i}_b")
            if full is None and (a is None or b is None):
                return f"neither lokr_w{i} nor both lokr_w{i}_a / lokr_w{i}_b"
            if full is None and a is not None and b is not None and i == "1" and a[1] != b[0]:
                return f"lokr_w1_a {list(a)} and lokr_w1_b {list(b)} disagree on r"
    elif method == "IA3":
        if "ia3_l" not in mod.parts:
            return "ia3_l missing"
    elif method == "VERA":
        b, d = s("vera_lambda_b"), s("vera_lambda_d")
        if b is None or d is None or len(b) != 1 or len(d) != 1:
            return "vera_lambda_b / vera_lambda_d missing or not vectors"
        for key, dim in (("base_model.vera_A", 0), ("base_model.vera_B", 1)):
            proj = adapter.shared_tensors.get(key)
            if proj is not None and (len(proj.shape) != 2 or proj.shape[dim] != d[0]):
                return f"{key} {list(proj.shape)} does not match vera_lambda_d {list(d)}"
    elif method == "FOURIERFT":
        spec = s("fourierft_spectrum")
        if spec is None or len(spec) != 1:
            return "fourierft_spectrum missing or not a vector"
    elif method == "OFT":
        rot = s("oft_R")
        if rot is None or len(rot) != 2:
            return "oft_R missing or not a matrix"
        size = (1 + math.isqrt(1 + 8 * rot[1])) // 2
        if size * (size - 1) // 2 != rot[1]:
            return f"oft_R has {rot[1]} elements per block, not a triangle of a square block"
    elif method == "HRA":
        u = s("hra_u")
        if u is None or len(u) != 2:
            return "hra_u missing or not a matrix"
    elif method == "SHIRA":
        w, idx = s("shira_weight"), s("shira_indices")
        if w is None or idx is None or len(w) != 1 or len(idx) != 2 or idx != (2, w[0]):
            return "shira_weight (n,) and shira_indices (2, n) missing or disagreeing"
    elif method == "MISS":
        block = s("miss_block")
        if block is None or len(block) != 2:
            return "miss_block missing or not a matrix"
    elif method == "VBLORA":
        la, lb = s("vblora_logits_A"), s("vblora_logits_B")
        if la is None or lb is None or len(la) != 3 or len(lb) != 3:
            return "vblora_logits_A / vblora_logits_B missing (saved with save_only_topk_weights?)"
        if "base_model.vblora_vector_bank" not in adapter.shared_tensors:
            return "the vector bank base_model.vblora_vector_bank is missing"
    elif method == "RANDLORA":
        parts = ("randlora_A", "randlora_B", "randlora_lambda", "randlora_gamma")
        if any(s(p) is None for p in parts):
            return "randlora_A/B/lambda/gamma missing (saved with save_projection=False?)"
    elif method == "C3A":
        kernel = s("c3a_kernel")
        if kernel is None or len(kernel) != 3:
            return "c3a_kernel missing or not (out blocks, in blocks, block size)"
    elif method == "LN_TUNING":
        if "ln_tuning_layers" not in mod.parts:
            return "ln_tuning_layers.weight missing"
    elif method == "BOFT":
        rot, scale = s("boft_R"), s("boft_s")
        if rot is None or len(rot) != 4 or rot[2] != rot[3]:
            return "boft_R missing or not (factors, blocks, size, size)"
        if scale is None or len(scale) != 2 or scale[1] != 1:
            return "boft_s missing or not an (out, 1) column"
    return None


def find_nonfinite(adapter: AdapterDir) -> tuple[str, int] | None:
    """The first tensor with NaN/Inf values and how many it has, or None."""
    import torch
    from safetensors import safe_open

    with safe_open(str(adapter.weights_path), framework="pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            if t.is_floating_point():
                bad = int((~torch.isfinite(t)).sum())
                if bad:
                    return key, bad
    return None


def check_finite(adapter: AdapterDir) -> None:
    found = find_nonfinite(adapter)
    if found:
        raise NonFiniteTensor(adapter.path, *found)


def load_tensors(adapter: AdapterDir, device: str = "cpu") -> dict[str, torch.Tensor]:
    """All adapter tensors by their saved key."""
    from safetensors.torch import load_file

    return load_file(str(adapter.weights_path), device=device)


def convert_pickle(src: Path, dst_dir: Path) -> None:
    """Convert `adapter_model.bin` to safetensors with torch.load(weights_only=True).

    weights_only refuses anything but tensors and plain containers, so no code runs.
    """
    import torch
    from safetensors.torch import save_file

    try:
        state = torch.load(src / PICKLE_NAME, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError or RuntimeError variants
        raise InvalidAdapter(src, f"could not load {PICKLE_NAME} safely: {error}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidAdapter(src, f"{PICKLE_NAME} is not a flat dict of tensors")
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst_dir / WEIGHTS_NAME))
