"""Fixtures for shipping tests: tiny bases of three architectures, PEFT adapters on them, and
llama.cpp's own converter (the oracle), taken from the llama-cpp-python source distribution."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.factories import make_adapter

LLAMA_CPP_PYTHON = "0.3.36"  # vendors llama.cpp's convert_lora_to_gguf.py and gguf-py
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def _cache_dir() -> Path:
    return Path(os.environ.get("ADAPT_TEST_CACHE", Path.home() / ".cache" / "adapt-tests"))


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    """llama.cpp's converter scripts: $ADAPT_LLAMA_CPP_DIR, else the cached sdist, else the
    sdist downloaded with pip into the cache (skips only when pip cannot reach the registry)."""
    given = os.environ.get("ADAPT_LLAMA_CPP_DIR")
    if given:
        return Path(given)
    cache = _cache_dir()
    root = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if (root / "convert_lora_to_gguf.py").is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(cache)],
            capture_output=True, text=True, timeout=900,
        )
        if done.returncode != 0 or not sdist.is_file():
            pytest.skip(f"llama-cpp-python {LLAMA_CPP_PYTHON} sdist not downloadable "
                        f"(pip: {done.stderr.strip().splitlines()[-1:]})")
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    wanted = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "gguf-py/", "conversion/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(prefix) and m.name[len(prefix):].startswith(wanted)]
        tar.extractall(cache, members=members, filter="data")
    return root


def run_converter(llama_cpp: Path, adapter: Path, base: Path, out: Path,
                  outtype: str = "f32") -> Path:
    """llama.cpp's convert_lora_to_gguf.py, in a subprocess with this interpreter."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(llama_cpp / "convert_lora_to_gguf.py"), "--base", str(base),
         "--outfile", str(out), "--outtype", outtype, str(adapter)],
        cwd=llama_cpp, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _save(model: Any, out: Path) -> Path:
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def qwen2_base(models_dir: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(3)
    return _save(Qwen2ForCausalLM(Qwen2Config(**TINY, tie_word_embeddings=False)),
                 models_dir / "tiny-qwen2")


@pytest.fixture(scope="session")
def gemma_base(models_dir: Path) -> Path:
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(4)
    return _save(GemmaForCausalLM(GemmaConfig(**TINY, head_dim=16)), models_dir / "tiny-gemma")


@pytest.fixture(scope="session")
def phi3_base(models_dir: Path) -> Path:
    """Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(5)
    config = Phi3Config(**TINY, pad_token_id=0, tie_word_embeddings=False)
    return _save(Phi3ForCausalLM(config), models_dir / "tiny-phi3")


@pytest.fixture(scope="session")
def qwen3_base(models_dir: Path) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(6)
    config = Qwen3Config(**TINY, head_dim=16, tie_word_embeddings=False)
    return _save(Qwen3ForCausalLM(config), models_dir / "tiny-qwen3")


@pytest.fixture(scope="session")
def gemma2_base(models_dir: Path) -> Path:
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(8)
    return _save(Gemma2ForCausalLM(Gemma2Config(**TINY, head_dim=16)),
                 models_dir / "tiny-gemma2")


@pytest.fixture(scope="session")
def bases(
    tiny_base: Path, qwen2_base: Path, gemma_base: Path, qwen3_base: Path, gemma2_base: Path,
) -> dict[str, Path]:
    return {"llama": tiny_base, "qwen2": qwen2_base, "gemma": gemma_base, "qwen3": qwen3_base,
            "gemma2": gemma2_base}


def lora_on(base: Path, out: Path, *, seed: int = 7, targets: list[str] | None = None,
            **kwargs: Any) -> Path:
    from peft import LoraConfig

    config = LoraConfig(r=kwargs.pop("r", 4), lora_alpha=kwargs.pop("lora_alpha", 8),
                        target_modules=targets or ALL_LINEAR, init_lora_weights=False, **kwargs)
    return make_adapter(base, out, config, seed=seed)


@pytest.fixture(scope="session")
def plain_loras(models_dir: Path, bases: dict[str, Path]) -> dict[str, Path]:
    """A rank-4 LoRA on every linear layer of each base."""
    return {arch: lora_on(base, models_dir / f"lora-all-{arch}") for arch, base in bases.items()}


@pytest.fixture(scope="session")
def patterned_lora(models_dir: Path, tiny_base: Path) -> Path:
    """rsLoRA with rank_pattern and alpha_pattern: scales llama.cpp's converter gets wrong."""
    return lora_on(tiny_base, models_dir / "lora-rs-patterns", r=8, lora_alpha=16,
                   use_rslora=True, rank_pattern={"k_proj": 4, "down_proj": 2},
                   alpha_pattern={"q_proj": 3.0, "up_proj": 40.0})


@pytest.fixture(scope="session")
def rank_pattern_lora(models_dir: Path, tiny_base: Path) -> Path:
    """rank_pattern alone: llama.cpp's alpha / rank-of-the-tensor is PEFT's scale."""
    return lora_on(tiny_base, models_dir / "lora-rank-pattern", r=8, lora_alpha=16,
                   rank_pattern={"v_proj": 2, "gate_proj": 6})


