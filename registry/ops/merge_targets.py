"""Which base tensors a merge changes, replaces or adds, through the key map.

The adapter names modules as its model class does; the checkpoint may name them otherwise
(registry.keymap). Two cases need more than a rename:

- new heads: `modules_to_save` tensors the base checkpoint lacks (a classifier on a headless
  base) are written as new tensors, and config.json gets the head's size (num_labels) and the
  adapter's model class;
- tied embeddings: a checkpoint stores one tensor of a tied pair (`model.embed_tokens.weight`
  for `lm_head.weight` too). PEFT's forward applies an adapter on one of them to that one only,
  so when the adapter touches either, both are written and `tie_word_embeddings` is set false;
  otherwise the base's layout is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import IncompatibleBase, UnsupportedMethod
from registry.keymap import KeyMap, check_not_fused, key_map, module_tensor_name, saved_target
from registry.ops.deltas import merged_weight

if TYPE_CHECKING:
    import torch

    from registry.checkpoint import Checkpoint
    from registry.peft_dir import AdapterDir


@dataclass
class MergeTargets:
    """Base tensors by checkpoint name that the merge changes, and what it adds."""

    keymap: KeyMap
    weight_of: dict[str, str]  # checkpoint tensor -> module merged into it
    bias_of: dict[str, str]  # checkpoint tensor -> module whose bias it is
    replacements: dict[str, torch.Tensor]  # checkpoint tensor -> saved tensor
    appended: dict[str, torch.Tensor]  # model name -> new tensor (heads, untied copies)
    config_updates: dict[str, Any] = field(default_factory=dict)


def plan_targets(adapter: AdapterDir, ckpt: Checkpoint,
                 factors: dict[str, dict[str, torch.Tensor]],
                 tensors: dict[str, torch.Tensor]) -> MergeTargets:
    """Map the adapter's modules and saved tensors onto the checkpoint (IncompatibleBase...)."""
    km = key_map(adapter, ckpt, need_ties=True)
    module_of: dict[str, str] = {}  # model weight name -> module
    for module in factors:
        name = km.model_name(module_tensor_name(adapter, module))
        check_not_fused(km, name, module, adapter.method)
        module_of[name] = module
    saved: dict[str, torch.Tensor] = {}
    for key, info in adapter.extra_tensors.items():
        saved[km.model_name(saved_target(key))] = tensors[info.name]

    touched = set(module_of) | set(saved)
    tied = {t: s for t, s in km.tied.items() if t in touched or s in touched}
    out = MergeTargets(km, {}, {}, {}, {})
    for name, module in module_of.items():
        stored = km.stored.get(name)
        if stored is not None:
            out.weight_of[stored] = module
            bias = km.checkpoint_name(f"{module}.bias")
            if bias is not None:
                out.bias_of[bias] = module
        elif name not in km.tied:
            raise IncompatibleBase(module, None, None)
        elif "lora_B.bias" in factors[module]:
            raise UnsupportedMethod(f"{adapter.method} (lora_bias)", "merged",
                                    f"module {module} is a tied weight the checkpoint does "
                                    "not store")
    for name, tensor in saved.items():
        stored = km.stored.get(name)
        if stored is not None:
            out.replacements[stored] = tensor
        elif name not in km.tied:
            out.appended[name] = tensor  # a new head
    if tied:
        _untie(adapter, ckpt, km, module_of, saved, factors, out)
    out.config_updates.update(km.config_updates)
    if km.model_class and out.appended and _architecture(ckpt) != km.model_class:
        out.config_updates["architectures"] = [km.model_class]
    return out


def _untie(adapter: AdapterDir, ckpt: Checkpoint, km: KeyMap, module_of: dict[str, str],
           saved: dict[str, torch.Tensor], factors: dict[str, dict[str, torch.Tensor]],
           out: MergeTargets) -> None:
    """Write every tied target the checkpoint lacks as its own tensor; untie in config.json."""
    if ckpt.config.get("is_encoder_decoder"):
        # e.g. T5 scales its decoder output only while its embeddings are tied
        raise UnsupportedMethod(
            f"{adapter.method} on a tied embedding", "merged",
            "untying an encoder-decoder model's embeddings changes its forward",
        )
    for target, source in km.tied.items():
        if target in km.stored:
            continue
        value = saved.get(target)
        if value is None:
            source_name = km.stored.get(source)
            if source_name is None:
                raise IncompatibleBase(target.rsplit(".", 1)[0], None, None,
                                       f"tied to {source}, which the checkpoint lacks")
            value = read_checkpoint_tensor(ckpt, source_name)
        module = module_of.get(target)
        if module is not None:
            value = merged_weight(adapter, module, factors[module], value)
        out.appended[target] = value
    out.config_updates["tie_word_embeddings"] = False


def read_checkpoint_tensor(ckpt: Checkpoint, name: str) -> torch.Tensor:
    """One base tensor, read from its shard."""
    from safetensors import safe_open

    path = ckpt.file_of()[name]
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(name).clone()


def _architecture(ckpt: Checkpoint) -> str | None:
    archs = ckpt.config.get("architectures")
    return str(archs[0]) if isinstance(archs, list) and archs else None


def update_model_config(config_path: Path, updates: dict[str, Any]) -> None:
    """Write the merge's config changes (untied embeddings, head size, class) to config.json.

    tie_word_embeddings is set wherever a (sub)config carries it, since vision-language
    models keep it in their text config.
    """
    if not updates or not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return
    if not isinstance(config, dict):
        return
    for key, value in updates.items():
        config[key] = value
        if key == "tie_word_embeddings":
            for sub in config.values():
                if isinstance(sub, dict) and key in sub:
                    sub[key] = value
    if "id2label" in updates:
        config.pop("num_labels", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
