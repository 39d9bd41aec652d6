"""Tiny base models and fine-tunes of them with known deltas, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.factories import make_tiny_gpt2, make_tiny_llama

# module -> singular values of its known delta (rank = how many); spread so every direction
# holds well over 1e-3 of the energy and an energy threshold has one right answer
KNOWN_SPECTRA = {
    "self_attn.q_proj": [3.0, 2.0],
    "self_attn.v_proj": [3.0, 2.5, 2.0, 1.5],
    "mlp.down_proj": [4.0, 3.0, 2.5, 2.0, 1.5, 1.0],
}


def known_factors(shape: tuple[int, int], spectrum: list[float], seed: int):
    """B (out, r), A (r, in) with B @ A having exactly the given singular values."""
    import torch

    g = torch.Generator().manual_seed(seed)
    r = len(spectrum)
    u, _ = torch.linalg.qr(torch.randn(shape[0], r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], r, generator=g, dtype=torch.float64))
    s = torch.tensor(spectrum, dtype=torch.float64)
    return (u * s).float(), v.T.float().contiguous()


def make_tuned(base: Path, out: Path, spectra: dict[str, list[float]], *,
               touch: tuple[str, ...] = (), seed: int = 11) -> tuple[Path, dict]:
    """Copy `base` to `out` with W += B A on every module whose name ends with a spectra key.

    touch: other tensors (e.g. a norm) changed by a small offset. Returns (out, {module: B A}).
    """
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, out)
    deltas: dict = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors = load_file(str(f))
        for i, (name, t) in enumerate(sorted(tensors.items())):
            module = name.removesuffix(".weight")
            key = next((k for k in spectra if module.endswith(k)), None)
            if key is not None and name.endswith(".weight"):
                shape = tuple(t.shape)
                conv1d = "c_" in module  # GPT-2 stores (in, out)
                out_in = (shape[1], shape[0]) if conv1d else shape
                b, a = known_factors(out_in, spectra[key], seed + i)
                delta = b @ a
                deltas[module] = delta
                tensors[name] = t + (delta.T if conv1d else delta)
            elif name in touch:
                tensors[name] = t + 0.01 * torch.ones_like(t)
        save_file(tensors, str(f), metadata={"format": "pt"})
    return out, deltas


@pytest.fixture(scope="session")
def extract_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("extract-models")


@pytest.fixture(scope="session")
def llama_base(extract_models: Path) -> Path:
    return make_tiny_llama(extract_models / "llama", seed=21)


@pytest.fixture(scope="session")
def llama_tuned(extract_models: Path, llama_base: Path) -> tuple[Path, dict]:
    return make_tuned(llama_base, extract_models / "llama-tuned", KNOWN_SPECTRA,
                      touch=("model.norm.weight",))


@pytest.fixture(scope="session")
def gpt2_base(extract_models: Path) -> Path:
    return make_tiny_gpt2(extract_models / "gpt2", seed=22)


@pytest.fixture(scope="session")
def gpt2_tuned(extract_models: Path, gpt2_base: Path) -> tuple[Path, dict]:
    return make_tuned(gpt2_base, extract_models / "gpt2-tuned",
                      {"attn.c_attn": [2.0, 1.0], "mlp.c_fc": [3.0, 2.0, 1.0]})


def peft_deltas(base: Path, adapter: Path) -> dict:
    """PEFT's own get_delta_weight for every adapted module, (out, in), float32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    out = {}
    for name, module in peft_model.base_model.model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            with torch.no_grad():
                out[name] = module.get_delta_weight("default").float()
    return out


@pytest.fixture(scope="session")
def method_adapters(extract_models: Path, llama_base: Path):
    """name -> adapter dir, built by PEFT on first use."""
    from tests.factories import make_adapter

    cache: dict[str, Path] = {}

    def build(name: str, config) -> Path:
        if name not in cache:
            cache[name] = make_adapter(llama_base, extract_models / f"adapter-{name}", config,
                                       seed=7)
        return cache[name]

    return build
