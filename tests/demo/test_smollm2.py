"""The real SmolLM2-135M-Instruct: GGUF -> safetensors conversion, and a short LoRA run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


TEXTS = ["Customer: Where is my order?\nAgent:", "SELECT name FROM users;"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The converted checkpoint, and the GGUF-loaded model's logits on TEXTS to compare with.

    convert_smollm2 is load_smollm2_gguf + save_checkpoint; calling the two here loads the
    GGUF file once (20 s) instead of twice.
    """
    pytest.importorskip("gguf")
    import torch

    from registry.demo.models import load_smollm2_gguf, save_checkpoint

    model, tokenizer = load_smollm2_gguf()
    ids = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model.eval()(**ids).logits
    out = save_checkpoint(model, tokenizer, tmp_path_factory.mktemp("smollm2") / "smollm2")
    return out, logits


@pytest.fixture(scope="module")
def smollm2(converted: tuple[Path, object]) -> Path:
    return converted[0]


def test_converted_checkpoint_matches_gguf_logits(converted: tuple[Path, object]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out, reference_logits = converted
    assert "quantization_config" not in AutoConfig.from_pretrained(out).to_dict()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(TEXTS, return_tensors="pt", padding=True)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(**ids).logits
    # float32 holds the dequantized weights exactly: same weights, same kernels, same logits
    torch.testing.assert_close(logits, reference_logits, rtol=0, atol=1e-5)


def test_conversion_is_reused_when_complete(smollm2: Path) -> None:
    from registry.demo import convert_smollm2

    before = (smollm2 / "model.safetensors").stat().st_mtime_ns
    assert convert_smollm2(smollm2) == smollm2
    assert (smollm2 / "model.safetensors").stat().st_mtime_ns == before


def test_short_lora_training_lowers_held_out_loss(smollm2: Path, tmp_path: Path) -> None:
    from registry.demo import load_demo_texts, train_lora

    info = train_lora(smollm2, load_demo_texts("sql")[:16], tmp_path / "sql-lora",
                      eval_texts=load_demo_texts("sql-eval")[:4], steps=4, lr=2e-3,
                      batch_size=4, max_length=48)
    assert info["eval_loss_after"] < info["eval_loss_before"]
    assert (tmp_path / "sql-lora" / "adapter_model.safetensors").is_file()
