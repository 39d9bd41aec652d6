"""A small, deterministic PEFT LoRA training loop on CPU, for the quickstart's two adapters."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Progress = Callable[[int, int | None], None]


def _no_progress(done: int, total: int | None = None) -> None:
    return None

TRAIN_INFO = "adapt-demo-train.json"  # written next to the adapter dir, not inside it


def train_info_path(out_dir: Path) -> Path:
    """Where train_lora records its settings and eval figures (a sibling of `out_dir`).

    Kept outside the adapter directory so it is not registered as one of the adapter's files.
    """
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}.{TRAIN_INFO}")


def _batches(seqs: list[list[int]], batch_size: int, pad_id: int) -> list[Any]:
    import torch

    out = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
            labels[row, :len(seq)] = torch.tensor(seq)
        out.append((ids, mask, labels))
    return out


def _eval_loss(model: Any, seqs: list[list[int]], batch_size: int, pad_id: int) -> float:
    """Mean next-token cross-entropy over every predicted position of `seqs` (nats)."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for ids, mask, labels in _batches(seqs, batch_size, pad_id):
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           target.reshape(-1), ignore_index=-100,
                                           reduction="sum"))
            count += int((target != -100).sum())
    return total / max(count, 1)


def train_lora(
    base_dir: Path,
    texts: Sequence[str],
    out_dir: Path,
    *,
    eval_texts: Sequence[str],
    r: int = 8,
    alpha: int = 16,
    steps: int = 30,
    lr: float = 2e-3,
    seed: int = 0,
    batch_size: int = 4,
    max_length: int = 64,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    base_model_id: str | None = None,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on `texts` with PEFT and save it to `out_dir`.

    Returns the settings and the held-out figures: eval loss and perplexity on `eval_texts`
    before (the base alone) and after training. Tokenizes exactly as `adapt validate` does
    (the base's tokenizer, else UTF-8 bytes), so the figures compare with validation runs.
    base_model_id: written as base_model_name_or_path in adapter_config.json (default: the
    base directory's path).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from registry.validation.evaldata import tokenize

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    config = AutoConfig.from_pretrained(base_dir)
    vocab = int(config.vocab_size)
    train_tok = tokenize(list(texts), base_dir, vocab, max_length)
    eval_seqs = tokenize(list(eval_texts), base_dir, vocab, max_length).sequences
    pad_id = config.pad_token_id if isinstance(config.pad_token_id, int) else 0

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules),
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    # LoRA's B starts at zero, so the wrapped model still computes the base's loss here.
    loss_before = _eval_loss(peft_model, eval_seqs, batch_size, pad_id)

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(seed)
    seqs = train_tok.sequences
    queue: list[int] = []
    train_losses: list[float] = []
    report = on_progress or _no_progress
    report(0, steps)
    peft_model.train()
    for step in range(steps):
        picked = []
        for _ in range(min(batch_size, len(seqs))):
            if not queue:  # a fresh shuffled epoch
                queue = torch.randperm(len(seqs), generator=order).tolist()
            picked.append(seqs[queue.pop()])
        ((ids, mask, labels),) = _batches(picked, len(picked), pad_id)
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_losses.append(float(loss.detach()))
        report(step + 1, steps)
    loss_after = _eval_loss(peft_model, eval_seqs, batch_size, pad_id)

    peft_model.peft_config["default"].base_model_name_or_path = base_model_id or str(base_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    # embeddings are not adapted; "auto" would look the base id up on the Hub
    peft_model.save_pretrained(str(tmp), save_embedding_layers=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)

    info: dict[str, Any] = {
        "settings": {"r": r, "alpha": alpha, "steps": steps, "lr": lr, "seed": seed,
                     "batch_size": batch_size, "max_length": max_length,
                     "target_modules": list(target_modules), "train_texts": len(seqs),
                     "eval_texts": len(eval_seqs)},
        "tokenizer": train_tok.tokenizer,
        "eval_loss_before": loss_before,
        "eval_ppl_before": math.exp(loss_before),
        "eval_loss_after": loss_after,
        "eval_ppl_after": math.exp(loss_after),
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_last": train_losses[-1] if train_losses else None,
    }
    train_info_path(out_dir).write_text(json.dumps(info, indent=2) + "\n")
    return info
