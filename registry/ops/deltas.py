"""Per-method weight math for PEFT adapters, in one place: merge, compose, quantize, validate.

Each formula follows PEFT's own `get_delta_weight` / `merge` (peft/tuners/*/layer.py and
lora/variants.py) so that a merge here equals `merge_and_unload()`. Everything is computed in
float32; callers cast once when they write.

Layouts: a "weight" is always in the base checkpoint's layout, so for GPT-2's Conv1D
(fan_in_fan_out) it is (in, out), and for an embedding it is (num_embeddings, dim).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from registry.errors import UnsupportedMethod
from registry.peft_dir import PROMPT_METHODS, AdapterDir

if TYPE_CHECKING:
    import torch

# Methods whose delta this module computes.
MERGEABLE_METHODS = frozenset({"LORA", "ADALORA", "LOHA", "LOKR", "IA3", "VERA", "FOURIERFT",
                               "OFT", "BOFT", "HRA", "SHIRA", "LN_TUNING", "MISS", "C3A",
                               "VBLORA", "RANDLORA"})
# Methods whose merge multiplies (W -> W R) or replaces (LN tuning) the base weight, so their
# change depends on W.
MULTIPLICATIVE_METHODS = frozenset({"IA3", "OFT", "BOFT", "HRA", "LN_TUNING"})

# Methods that have no single merged weight, and why.
_NO_SINGLE_WEIGHT = {
    "XLORA": "a learned classifier mixes its LoRA experts per token, so no single weight "
             "equals it",
    "POLY": "it routes each task to its own mixture of LoRA skills, so no single weight "
            "equals it",
}

# LoRA config fields that switch on a variant whose merge differs from plain LoRA/DoRA.
_LORA_VARIANT_FIELDS = (
    "use_qalora", "alora_invocation_tokens", "velora_config", "monteclora_config", "use_bdlora",
    "arrow_config", "kasa_config", "target_parameters", "layer_replication",
    "trainable_token_indices",
)
# init_lora_weights values that rewrite the base weights at init: the saved factors only make
# sense on top of the residual base, which the original checkpoint is not.
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq")


def check_mergeable(adapter: AdapterDir) -> None:
    """Raise UnsupportedMethod unless this module can compute the adapter's merged weights."""
    method = adapter.peft_type
    if method in PROMPT_METHODS or method == "ADAPTION_PROMPT":
        raise UnsupportedMethod(method, "merged", "the method adds virtual tokens, not weights")
    if method in _NO_SINGLE_WEIGHT:
        raise UnsupportedMethod(method, "merged", _NO_SINGLE_WEIGHT[method])
    if method not in MERGEABLE_METHODS:
        raise UnsupportedMethod(
            method, "merged",
            f"adapt merges {', '.join(sorted(MERGEABLE_METHODS))} (and DoRA) only",
        )
    if method == "LORA":
        for name in _LORA_VARIANT_FIELDS:
            if adapter.config.get(name):
                raise UnsupportedMethod(
                    f"LORA ({name})", "merged", "adapt does not implement this LoRA variant"
                )
        init = adapter.config.get("init_lora_weights")
        if isinstance(init, str) and init.lower().startswith(_BASE_REWRITING_INITS):
            raise UnsupportedMethod(
                f"LORA (init_lora_weights={init})", "merged",
                "its factors apply to a rewritten base; save it with PEFT's "
                "path_initial_model_for_weight_conversion to get a plain LoRA",
            )
        if init == "mica":
            raise UnsupportedMethod("LORA (mica)", "merged", "adapt does not implement MiCA")
    if method == "VERA" and not adapter.shared_tensors:
        raise UnsupportedMethod("VERA (save_projection=false)", "merged",
                                "the frozen projections are not in the file; save the adapter "
                                "with save_projection=True")
    if method == "MISS" and adapter.config.get("init_weights") == "bat":
        raise UnsupportedMethod("MISS (bat)", "merged", "adapt does not implement Bat's "
                                "weight-dependent update")
    if method == "OFT" and adapter.config.get("block_share"):
        raise UnsupportedMethod("OFT (block_share)", "merged", "adapt does not implement it")


def module_factors(
    adapter: AdapterDir, tensors: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, torch.Tensor]]:
    """Group loaded adapter tensors by module and part: {module: {"lora_A": t, ...}}.

    tensors: the adapter's tensors by saved key (as `peft_dir.load_tensors` returns them).
    """
    out: dict[str, dict[str, torch.Tensor]] = {}
    shared = {key.rsplit(".", 1)[-1]: tensors[info.name]
              for key, info in adapter.shared_tensors.items()}
    for module, mod in adapter.modules.items():
        out[module] = {**shared, **{part: tensors[info.name] for part, info in mod.parts.items()}}
    return out


def merged_weight(
    adapter: AdapterDir,
    module: str,
    factors: Mapping[str, torch.Tensor],
    base_weight: torch.Tensor,
) -> torch.Tensor:
    """The module's new weight (float32) after merging the adapter into `base_weight`."""
    import torch

    w = base_weight.float()
    method = adapter.peft_type
    if method == "IA3":
        return w * _ia3_vector(adapter, module, factors, w)
    if method in {"OFT", "BOFT", "HRA"}:
        return _rotated_weight(adapter, module, factors, w)
    if method == "LN_TUNING":  # the tuned norm layer replaces the base one
        return factors["ln_tuning_layers"].float().reshape(w.shape)
    if method == "LORA" and "lora_magnitude_vector" not in factors and "lora_A" in factors:
        a, b = factors["lora_A"].float(), factors["lora_B"].float()
        if a.dim() == 2 and w.dim() == 2:
            # W + scale * (B @ A) in one BLAS pass: no separate delta tensor to allocate and
            # add, which is most of a streaming merge's compute
            scale = _lora_scale(adapter, module)
            if _fan_in_fan_out(adapter, (b.shape[0], a.shape[1]), tuple(w.shape)):
                a, b = b.T, a.T
            if w.data_ptr() != base_weight.data_ptr():  # .float() made a copy we own
                return w.addmm_(b, a, alpha=scale)
            return torch.addmm(w, b, a, alpha=scale)
    delta = _additive_delta(adapter, module, factors, tuple(w.shape))
    if "lora_magnitude_vector" in factors:
        return _dora_merge(adapter, module, factors, w, delta)
    return w + delta


def delta_weight(
    adapter: AdapterDir,
    module: str,
    factors: Mapping[str, torch.Tensor],
    base_weight: torch.Tensor | None = None,
    *,
    shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """The float32 change to the module's weight, in the base weight's layout.

    base_weight: needed for DoRA, IA3, OFT and HRA, whose change depends on W (then
    merged - W); for the additive methods it only fixes the layout (otherwise implied by the
    factors, or by `shape`, the base weight's shape, which VeRA and FourierFT need).
    """
    method = adapter.peft_type
    multiplicative = method in MULTIPLICATIVE_METHODS or "lora_magnitude_vector" in factors
    if multiplicative:
        if base_weight is None:
            raise ValueError(f"{module}: the {adapter.method} delta depends on the base weight")
        w = base_weight.float()
        return merged_weight(adapter, module, factors, w) - w
    if base_weight is not None:
        shape = tuple(base_weight.shape)
    return _additive_delta(adapter, module, factors, shape)


def merged_bias(
    adapter: AdapterDir,
    module: str,
    factors: Mapping[str, torch.Tensor],
    base_bias: torch.Tensor,
) -> torch.Tensor | None:
    """The module's new bias (float32), or None when merging leaves the bias alone.

    LoRA with lora_bias adds scale * lora_B.bias; IA3 on a non-feed-forward module scales the
    bias by its vector (as PEFT's IA3 merge does).
    """
    method = adapter.peft_type
    if method in {"LORA", "ADALORA"} and "lora_B.bias" in factors:
        return base_bias.float() + factors["lora_B.bias"].float() * _lora_scale(adapter, module)
    if method == "IA3" and not _ia3_is_feedforward(adapter, module, factors):
        return base_bias.float() * factors["ia3_l"].float().reshape(base_bias.shape)
    if method == "LN_TUNING" and "ln_tuning_layers.bias" in factors:
        return factors["ln_tuning_layers.bias"].float().reshape(base_bias.shape)
    return None


# -- additive methods -------------------------------------------------------------------------
def _additive_delta(
    adapter: AdapterDir,
    module: str,
    factors: Mapping[str, torch.Tensor],
    shape: tuple[int, ...] | None,
) -> torch.Tensor:
    method = adapter.peft_type
    if method in {"LORA", "ADALORA"}:
        return _lora_delta(adapter, module, factors, shape)
    if method == "LOHA":
        delta = _loha_delta(adapter, module, factors)
    elif method == "LOKR":
        delta = _lokr_delta(adapter, module, factors)
    elif method == "C3A":
        delta = _c3a_delta(factors)
    elif method == "VBLORA":
        b, a = _vblora_factors(adapter, factors)
        delta = b @ a
        if _fan_in_fan_out(adapter, (b.shape[0], a.shape[1]), shape):
            delta = delta.T
    elif method in {"VERA", "FOURIERFT", "SHIRA", "MISS", "RANDLORA"}:
        if shape is None or len(shape) != 2:
            raise UnsupportedMethod(method, "converted without its base",
                                    f"module {module}: the delta's shape comes from the base "
                                    "weight; register the source with --base")
        out_in = (shape[1], shape[0]) if adapter.fan_in_fan_out else (shape[0], shape[1])
        if method == "VERA":
            b, a = _vera_factors(factors, out_in)
            delta = b @ a
        elif method == "SHIRA":
            delta = _shira_delta(factors, out_in)
        elif method == "MISS":
            delta = _miss_delta(adapter, factors, out_in)
        elif method == "RANDLORA":
            b, a = _randlora_factors(adapter, module, factors, out_in)
            delta = b @ a
        else:
            delta = _fourierft_delta(adapter, factors, out_in)
        return delta.T if adapter.fan_in_fan_out else delta
    else:
        raise UnsupportedMethod(method, "merged", "it has no additive delta")
    return delta.reshape(shape) if shape is not None else delta


def _lora_scale(adapter: AdapterDir, module: str) -> float:
    if adapter.peft_type == "ADALORA":
        # AdaLoRA: scaling = lora_alpha (or r when alpha <= 0); the division by ranknum is
        # applied separately, exactly as PEFT does.
        alpha = adapter.alpha if adapter.alpha is not None else 0.0
        return alpha if alpha > 0 else float(adapter.rank or 0)
    return adapter.lora_scale(module)


def _lora_delta(
    adapter: AdapterDir,
    module: str,
    factors: Mapping[str, torch.Tensor],
    shape: tuple[int, ...] | None,
) -> torch.Tensor:
    import torch

    scale = _lora_scale(adapter, module)
    if "lora_embedding_A" in factors:
        a = factors["lora_embedding_A"].float()  # (r, num_embeddings)
        b = factors["lora_embedding_B"].float()  # (dim, r)
        return (b @ a).T * scale
    a = factors["lora_A"].float()
    b = factors["lora_B"].float()
    if a.dim() != 2 or b.dim() != 2:
        raise UnsupportedMethod(adapter.method, "merged",
                                f"module {module} is a convolution, which adapt does not merge yet")
    if adapter.peft_type == "ADALORA":
        e = factors["lora_E"].float()
        # PEFT keeps ranknum as a float32 parameter equal to the number of kept ranks
        ranknum = torch.tensor(float(e.shape[0]), dtype=torch.float32)
        product = b @ (a * e) * scale / (ranknum + 1e-5)
    else:
        product = (b @ a) * scale
    if _fan_in_fan_out(adapter, (b.shape[0], a.shape[1]), shape):
        product = product.T
    return product


def _fan_in_fan_out(
    adapter: AdapterDir, out_in: tuple[int, int], shape: tuple[int, ...] | None
) -> bool:
    """Whether this module stores its weight as (in, out), like GPT-2's Conv1D.

    PEFT forces the flag per module (on for Conv1D, off for Linear) whatever the config says;
    the base shape tells us which, unless the weight is square.
    """
    if shape is not None and len(shape) == 2 and out_in[0] != out_in[1]:
        return tuple(shape) == (out_in[1], out_in[0])
    return adapter.fan_in_fan_out


def _loha_delta(
    adapter: AdapterDir, module: str, factors: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    if "hada_t1" in factors:
        raise UnsupportedMethod("LOHA", "merged",
                                f"module {module} uses CP-decomposed convolution factors")
    r, alpha = adapter.rank_alpha(module)
    w1 = factors["hada_w1_a"].float() @ factors["hada_w1_b"].float()
    w2 = factors["hada_w2_a"].float() @ factors["hada_w2_b"].float()
    return (w1 * w2) * (alpha / r)


def _lokr_delta(
    adapter: AdapterDir, module: str, factors: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    import torch

    w1, w2, scale = lokr_kron_factors(adapter, module, factors)
    return torch.kron(w1, w2.contiguous()) * scale


def lokr_kron_factors(
    adapter: AdapterDir, module: str, factors: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """LoKr's delta as (w1, w2, scale) with delta = scale * kron(w1, w2), both (out_i, in_i)."""
    if "lokr_t2" in factors:
        raise UnsupportedMethod("LOKR", "merged",
                                f"module {module} uses CP-decomposed convolution factors")
    if "lokr_w1" in factors:
        w1 = factors["lokr_w1"].float()
    else:
        w1 = factors["lokr_w1_a"].float() @ factors["lokr_w1_b"].float()
    if "lokr_w2" in factors:
        w2 = factors["lokr_w2"].float()
    else:
        w2 = factors["lokr_w2_a"].float() @ factors["lokr_w2_b"].float()
    if w1.dim() != 2 or w2.dim() != 2:
        raise UnsupportedMethod("LOKR", "merged",
                                f"module {module} is a convolution, which adapt does not merge yet")
    # PEFT scales LoKr by alpha / r whether or not the factors are low-rank
    r, alpha = adapter.rank_alpha(module)
    return w1, w2, alpha / r


# -- exact low-rank forms (for conversion to LoRA) --------------------------------------------
def lowrank_delta_factors(
    adapter: AdapterDir,
    module: str,
    factors: Mapping[str, torch.Tensor],
    shape: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(B, A) with B @ A exactly the module's additive delta in (out, in) orientation, or None.

    LoHa's Hadamard product of two rank-r products is the product of their row-wise and
    column-wise Khatri-Rao factors (rank <= r1 * r2); AdaLoRA folds E and its scale into A;
    VeRA scales its shared projections (rank <= r; `shape`, the base weight's, slices them).
    LoKr has its own exact form (lokr_kron_factors); other methods have none.
    """
    method = adapter.peft_type
    if method == "LOHA":
        if "hada_t1" in factors:
            raise UnsupportedMethod("LOHA", "converted",
                                    f"module {module} uses CP-decomposed convolution factors")
        r, alpha = adapter.rank_alpha(module)
        b1, a1 = factors["hada_w1_a"].float(), factors["hada_w1_b"].float()
        b2, a2 = factors["hada_w2_a"].float(), factors["hada_w2_b"].float()
        if a1.dim() != 2 or a2.dim() != 2:
            raise UnsupportedMethod("LOHA", "converted", f"module {module} is a convolution")
        # ((B1 A1) * (B2 A2))[i, j] = sum_pq B1[i,p] B2[i,q] A1[p,j] A2[q,j]
        b = (b1[:, :, None] * b2[:, None, :]).reshape(b1.shape[0], -1) * (alpha / r)
        a = (a1[:, None, :] * a2[None, :, :]).reshape(-1, a1.shape[1])
        return b, a
    if method == "VERA":
        if shape is None or len(shape) != 2:
            raise UnsupportedMethod("VERA", "converted without its base",
                                    f"module {module}: the projections are sliced to the base "
                                    "weight's shape; register the source with --base")
        return _vera_factors(factors, (shape[1], shape[0]) if adapter.fan_in_fan_out
                             else (shape[0], shape[1]))
    if method == "VBLORA":
        return _vblora_factors(adapter, factors)
    if method == "ADALORA" and "lora_A" in factors:
        import torch

        e = factors["lora_E"].float()
        ranknum = torch.tensor(float(e.shape[0]), dtype=torch.float32)
        scale = _lora_scale(adapter, module) / (ranknum + 1e-5)
        return factors["lora_B"].float(), factors["lora_A"].float() * e * scale
    return None


# -- multiplicative methods -------------------------------------------------------------------
def _dora_merge(
    adapter: AdapterDir,
    module: str,
    factors: Mapping[str, torch.Tensor],
    w: torch.Tensor,
    delta: torch.Tensor,
) -> torch.Tensor:
    """DoRA: m / ||W + dW|| (per output unit) times (W + dW), with the norm as PEFT takes it."""
    magnitude = factors["lora_magnitude_vector"].float().reshape(-1)
    if "lora_embedding_A" in factors:
        # embedding weight is (num_embeddings, dim): the norm runs over embeddings, per dim
        norm = (w.T + delta.T).norm(p=2, dim=1)
        return (magnitude / norm).view(1, -1) * (w + delta)
    if w.dim() != 2:
        raise UnsupportedMethod("DORA", "merged",
                                f"module {module} is a convolution, which adapt does not merge yet")
    a, b = factors["lora_A"], factors["lora_B"]
    fifo = _fan_in_fan_out(adapter, (b.shape[0], a.shape[1]), tuple(w.shape))
    w_oi, d_oi = (w.T, delta.T) if fifo else (w, delta)
    norm = (w_oi + d_oi).norm(p=2, dim=1)
    factor = (magnitude / norm).view(-1, 1)
    return (factor.T if fifo else factor) * (w + delta)


def _ia3_is_feedforward(
    adapter: AdapterDir, module: str, factors: Mapping[str, torch.Tensor]
) -> bool:
    ff = adapter.config.get("feedforward_modules")
    if isinstance(ff, str):  # a regex from the file: bounded, never Python's backtracking
        from registry.patterns import fullmatch

        return fullmatch(ff, module)
    if isinstance(ff, list | tuple):
        return any(module == k or module.endswith(f".{k}") for k in ff)
    vec = factors["ia3_l"]
    return vec.dim() == 2 and vec.shape[0] == 1 and vec.shape[1] != 1


def _ia3_vector(
    adapter: AdapterDir, module: str, factors: Mapping[str, torch.Tensor], w: torch.Tensor
) -> torch.Tensor:
    """The IA3 vector shaped to broadcast over the weight: rows, or input columns (feed-forward)."""
    vec = factors["ia3_l"].float()  # (out, 1), or (1, in) for feed-forward modules
    if vec.dim() != 2 or w.dim() != 2:
        raise UnsupportedMethod("IA3", "merged",
                                f"module {module} is a convolution, which adapt does not merge yet")
    # Conv1D stores (in, out): PEFT transposes the vector to match
    return vec.T if _ia3_transposed(adapter, vec, w) else vec


def _ia3_transposed(adapter: AdapterDir, vec: torch.Tensor, w: torch.Tensor) -> bool:
    rows, cols = w.shape
    fits = (vec.shape[0] in (1, rows)) and (vec.shape[1] in (1, cols))
    fits_t = (vec.shape[1] in (1, rows)) and (vec.shape[0] in (1, cols))
    if fits and not fits_t:
        return False
    if fits_t and not fits:
        return True
    return adapter.fan_in_fan_out


# -- VeRA, FourierFT, SHiRA -----------------------------------------------------------------------
def _vera_factors(
    factors: Mapping[str, torch.Tensor], out_in: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """VeRA: (lambda_b * B[:out]) @ (lambda_d * A[:, :in]) with the shared frozen projections."""
    out_f, in_f = out_in
    a = factors["vera_A"].float()[:, :in_f]
    b = factors["vera_B"].float()[:out_f, :]
    lambda_b = factors["vera_lambda_b"].float().unsqueeze(-1)
    lambda_d = factors["vera_lambda_d"].float().unsqueeze(-1)
    return lambda_b * b, lambda_d * a


def _shira_delta(factors: Mapping[str, torch.Tensor], out_in: tuple[int, int]) -> torch.Tensor:
    """SHiRA: a sparse (out, in) delta, values at saved indices (repeated indices add up, as in
    PEFT's sparse COO add); PEFT's inference scaling is 1."""
    import torch

    idx = factors["shira_indices"].long()
    values = factors["shira_weight"].float()
    delta = torch.zeros(out_in)
    delta.index_put_((idx[0], idx[1]), values, accumulate=True)
    return delta


def _miss_delta(
    adapter: AdapterDir, factors: Mapping[str, torch.Tensor], out_in: tuple[int, int]
) -> torch.Tensor:
    """MiSS: input column j of W gains row j mod r of the shared block (PEFT's
    get_delta_weight_miss; "mini" repeats a (r, mini_r) block across the outputs)."""
    import torch

    block = factors["miss_block"].float()
    out_f, in_f = out_in
    if adapter.config.get("init_weights") == "mini":
        block = block.repeat(1, out_f // int(adapter.config.get("mini_r", block.shape[1])))
    return block.T[:, torch.arange(in_f) % block.shape[0]]


def _c3a_delta(factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """C3A: the block-circulant matrix of its kernel (m, n, b), divided by in = n * b (PEFT's
    get_circulant_fast, float32)."""
    import torch
    from torch.fft import fft, ifft

    w = factors["c3a_kernel"].float()
    _, n, b = w.shape
    x = torch.eye(n * b, dtype=w.dtype).reshape(n * b, n, b)
    x = torch.einsum("...nb,mnb->...mb", ifft(x), fft(w))
    x = fft(x).real.flatten(start_dim=1).T
    return x / (n * b)


def _vblora_factors(
    adapter: AdapterDir, factors: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """VB-LoRA: each sub-vector of A and B is the softmax-weighted sum of its top-k vectors from
    the shared bank (PEFT's vblora Linear._get_lora_matrices). Returns B (out, r), A (r, in)."""
    import torch

    bank = factors["vblora_vector_bank"].float()
    topk = int(adapter.config.get("topk", 2))

    def mix(logits: torch.Tensor) -> torch.Tensor:
        top, idx = logits.float().topk(topk, dim=-1)
        return (torch.softmax(top, dim=-1).unsqueeze(-1) * bank[idx]).sum(-2)

    logits_a, logits_b = factors["vblora_logits_A"], factors["vblora_logits_B"]
    a = mix(logits_a).reshape(logits_a.shape[0], -1)
    b = mix(logits_b).transpose(1, 2).reshape(-1, logits_b.shape[1])
    return b, a


def _randlora_factors(
    adapter: AdapterDir, module: str, factors: Mapping[str, torch.Tensor],
    out_in: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """RandLoRA: frozen random bases, the smaller one scaled by lambda and gamma, times
    randlora_alpha / r (PEFT's randlora Linear.get_scaled_bases and get_delta_weight).
    Returns B (out, k), A (k, in) with the scale folded into B."""
    out_f, in_f = out_in
    rand_a, rand_b = factors["randlora_A"].float(), factors["randlora_B"].float()
    lam, gamma = factors["randlora_lambda"].float(), factors["randlora_gamma"].float()
    n_bases = int(gamma.shape[0])
    min_dim, max_dim = min(out_f, in_f), max(out_f, in_f)
    small = (lam[:, :, None] * rand_a[:, :n_bases, :min_dim] * gamma[None]).flatten(end_dim=1)
    large = rand_b[:max_dim, :n_bases, :].flatten(start_dim=1)
    r, alpha = adapter.rank_alpha(module)
    alpha = float(adapter.config.get("randlora_alpha", alpha))
    scale = alpha / r
    if min_dim == in_f:  # the scaled small basis sits on the input side
        return large * scale, small
    return small.T * scale, large.T


def _fourierft_delta(
    adapter: AdapterDir, factors: Mapping[str, torch.Tensor], out_in: tuple[int, int]
) -> torch.Tensor:
    """FourierFT: the real part of ifft2 of a sparse spectrum, at locations drawn exactly as PEFT
    draws them (randperm of out * in seeded with random_loc_seed), times `scaling`."""
    import torch

    out_f, in_f = out_in
    spectrum = factors["fourierft_spectrum"].float()
    seed = int(adapter.config.get("random_loc_seed", 777))
    scaling = float(adapter.config.get("scaling", 150.0))
    flat = torch.randperm(out_f * in_f, generator=torch.Generator().manual_seed(seed))
    flat = flat[: spectrum.numel()]
    dense = torch.zeros(out_f, in_f)
    dense[flat // in_f, flat % in_f] = spectrum
    return torch.fft.ifft2(dense).real * scaling


# -- OFT, HRA: the base weight times an orthogonal matrix --------------------------------------
def _rotated_weight(
    adapter: AdapterDir, module: str, factors: Mapping[str, torch.Tensor], w: torch.Tensor
) -> torch.Tensor:
    """W R for HRA, (R W^T)^T for OFT and BOFT (then times boft_s per output row), with R
    (in, in) built as PEFT builds it."""
    import torch

    method = adapter.peft_type
    if w.dim() != 2:
        raise UnsupportedMethod(method, "merged",
                                f"module {module} is a convolution, which adapt does not merge yet")
    if method == "HRA":
        rot = _hra_matrix(adapter, factors)
    elif method == "BOFT":
        rot = _boft_matrix(adapter, factors)
    else:
        rot = _oft_matrix(adapter, factors)
    if rot.shape[0] != w.shape[1]:
        raise UnsupportedMethod(method, "merged",
                                f"module {module}: its {rot.shape[0]}-dim rotation does not "
                                f"match the weight {list(w.shape)} (fan_in_fan_out layers are "
                                "not supported)")
    if method == "HRA":
        return torch.mm(w, rot)
    merged = torch.mm(rot, w.t()).t()
    if method == "BOFT":
        # BOFT also scales each output row by its learned boft_s
        return merged * factors["boft_s"].float()
    return merged


def _hra_matrix(adapter: AdapterDir, factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The product of HRA's r Householder reflections (PEFT's HRALayer.get_delta_weight)."""
    import torch

    u = factors["hra_u"].float()
    n, rank = u.shape
    if adapter.config.get("apply_GS"):
        cols = [(u[:, 0] / u[:, 0].norm()).view(-1, 1)]
        for i in range(1, rank):
            ui = u[:, i].view(-1, 1)
            for j in range(i):
                ui = ui - (cols[j].t() @ ui) * cols[j]
            cols.append((ui / ui.norm()).view(-1, 1))
        basis = torch.cat(cols, dim=1)
        return torch.eye(n) - 2 * basis @ basis.t()
    u = u / u.norm(dim=0)
    weight = torch.eye(n)
    for i in range(rank):
        ui = u[:, i].view(-1, 1)
        weight = weight - 2 * weight @ ui @ ui.t()
    return weight


def _oft_matrix(adapter: AdapterDir, factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """OFT's block-diagonal rotation: the Cayley transform of each skew-symmetric block
    (or its Neumann series), after COFT's projection when `coft` is on (PEFT's
    OFTRotationModule.get_weight)."""
    import math as _math

    import torch

    q = factors["oft_R"].float()
    blocks, n_elements = q.shape
    size = (1 + _math.isqrt(1 + 8 * n_elements)) // 2
    rows, cols = torch.triu_indices(size, size, 1)

    def skew(vec: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(vec.shape[0], size, size, dtype=vec.dtype)
        m[:, rows, cols] = vec
        return m - m.transpose(-2, -1)

    if adapter.config.get("coft"):
        skewed = skew(q)
        eps = float(adapter.config.get("eps", 6e-5)) / torch.sqrt(torch.tensor(skewed.shape[0]))
        zero = torch.zeros_like(skewed)
        norm = torch.norm(skewed - zero, dim=(1, 2), keepdim=True)
        skewed = torch.where((norm <= eps).bool(), skewed, zero + eps * (skewed / norm))
        q = skewed[:, rows, cols]
    q_skew = skew(q)
    if adapter.config.get("use_cayley_neumann", True):
        terms = int(adapter.config.get("num_cayley_neumann_terms", 5))
        r = torch.eye(size).repeat(blocks, 1, 1)
        if terms > 1:
            r.add_(q_skew, alpha=2.0)
            if terms > 2:
                q_sq = torch.bmm(q_skew, q_skew)
                r.add_(q_sq, alpha=2.0)
                power = q_sq
                for _ in range(3, terms - 1):
                    power = torch.bmm(power, q_skew)
                    r.add_(power, alpha=2.0)
                power = torch.bmm(power, q_skew)
                r.add_(power)
    else:
        eye = torch.eye(size).unsqueeze(0).expand(blocks, size, size)
        r = torch.linalg.solve(eye + q_skew, eye - q_skew, left=False)
    return torch.block_diag(*r.unbind(0))


def _boft_matrix(adapter: AdapterDir, factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """BOFT's butterfly product: per factor, a block-diagonal Cayley rotation conjugated by its
    block butterfly permutation, multiplied in order (PEFT's boft Linear.get_delta_weight)."""
    import torch

    r = factors["boft_R"].float()
    n_factors, blocks, size, _ = r.shape
    flat = r.reshape(n_factors * blocks, size, size)
    skew = 0.5 * (flat - flat.transpose(1, 2))
    eye = torch.eye(size).unsqueeze(0).expand(n_factors * blocks, size, size)
    q = torch.linalg.solve(eye + skew, eye - skew, left=False).view(n_factors, blocks, size, size)
    diag = torch.stack([torch.block_diag(*q[i].unbind(0)) for i in range(n_factors)])
    n = blocks * size
    perms = torch.stack([
        _perm_matrix(_butterfly_perm(n, int(blocks / (2**i)), int(size / 2), n_factors - 1))
        for i in range(n_factors)
    ])
    batch = torch.bmm(perms, torch.bmm(diag, perms.permute(0, 2, 1)))
    out = batch[0]
    for i in range(1, n_factors):
        out = batch[i] @ out
    return out


def _butterfly_perm(n: int, b: int, r: int, n_butterfly_factor: int) -> torch.Tensor:
    """PEFT's BOFTLayer.block_butterfly_perm: the index order of one butterfly factor."""
    import torch

    if n_butterfly_factor == 0:
        return torch.arange(n)
    if b * r * 2 > n:
        raise UnsupportedMethod("BOFT", "merged", "invalid number of butterfly blocks")
    block_size = n // b
    indices = torch.arange(n)
    step = block_size / r
    initial = torch.arange(block_size)
    order = torch.empty(block_size, dtype=torch.long)
    seq = torch.cat((torch.arange(0, step, 2), torch.arange(1, step, 2)), dim=0)
    for i, pos in enumerate(seq):
        order[int(i * r): int(i * r + r)] = initial[int(pos * r): int(pos * r + r)]
    for i in range(0, n, block_size):
        indices[i: i + block_size] = indices[i: i + block_size][order]
    return indices


def _perm_matrix(indices: torch.Tensor) -> torch.Tensor:
    import torch

    n = len(indices)
    mat = torch.zeros((n, n))
    mat[torch.arange(n), indices] = 1.0
    return mat
