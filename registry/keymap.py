"""Adapter module names -> base checkpoint tensor names, the way transformers loads them.

A PEFT adapter names modules as they are in the model it was trained on (say
`BertForSequenceClassification`: `bert.encoder.layer.0...`), while the base checkpoint names
tensors as the class that saved it did (a headless `BertModel`: `encoder.layer.0...`), possibly
in an older layout that transformers renames when loading (vision-language models moved
`language_model.model.*` to `model.language_model.*`), and tied weights are stored once.

Nothing here is a per-model table: when names do not match one to one, the adapter's model
class is built on the meta device from the base's config and transformers' own loading code
says what each checkpoint tensor becomes (`base_model_prefix` added or stripped, the class's
checkpoint conversion mapping, tied weights). Tensors that transformers builds from several
checkpoint tensors (fused experts) are not 1:1 and are reported as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from registry.errors import UnsupportedMethod

if TYPE_CHECKING:
    from registry.checkpoint import Checkpoint
    from registry.peft_dir import AdapterDir

# PEFT task types -> the transformers auto-mapping that names the task's model class.
_TASK_MAPPINGS = {
    "CAUSAL_LM": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "SEQ_CLS": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "TOKEN_CLS": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "QUESTION_ANS": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "SEQ_2_SEQ_LM": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "FEATURE_EXTRACTION": "MODEL_MAPPING_NAMES",
}
# Task types whose head size is the config's num_labels.
LABEL_TASKS = frozenset({"SEQ_CLS", "TOKEN_CLS"})


@dataclass(frozen=True)
class KeyMap:
    """How the adapter's model names tensors against what the base checkpoint stores.

    Names on the left are "model names" (the adapter's model class, as PEFT saw it); names on
    the right are checkpoint tensor names.
    """

    model_class: str | None  # None: names are used as they are (no transformers metadata)
    base_model_prefix: str | None
    stored: Mapping[str, str]  # model name -> checkpoint name, where one tensor loads as one
    fused: Mapping[str, list[str]] = field(default_factory=dict)  # built from several tensors
    tied: Mapping[str, str] = field(default_factory=dict)  # tied target -> its source
    model_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    config_updates: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"num_labels": 3}

    @property
    def identity(self) -> bool:
        return self.model_class is None

    def model_name(self, name: str) -> str:
        """The model name an adapter-side name refers to (prefix added/stripped if needed)."""
        if self.identity or name in self.model_shapes or not self.base_model_prefix:
            return name
        prefix = self.base_model_prefix + "."
        for candidate in (prefix + name, name.removeprefix(prefix)):
            if candidate in self.model_shapes:
                return candidate
        return name

    def checkpoint_name(self, name: str) -> str | None:
        """The checkpoint tensor that loads as model tensor `name` (through a tie if needed)."""
        name = self.model_name(name)
        if name in self.stored:
            return self.stored[name]
        source = self.tied.get(name)
        if source is not None and source in self.stored:
            return self.stored[source]
        return None

    def tie_partner(self, name: str) -> str | None:
        """The other model tensor of a tied pair `name` belongs to, or None."""
        name = self.model_name(name)
        if name in self.tied:
            return self.tied[name]
        for target, source in self.tied.items():
            if source == name:
                return target
        return None

    def fused_reason(self, name: str) -> str | None:
        """Why model tensor `name` is not one checkpoint tensor, or None when it is."""
        sources = self.fused.get(self.model_name(name))
        if not sources:
            return None
        shown = ", ".join(sources[:2]) + (f" and {len(sources) - 2} more"
                                          if len(sources) > 2 else "")
        return f"transformers builds it from {len(sources)} checkpoint tensors ({shown})"


def identity_map(names: Iterable[str]) -> KeyMap:
    return KeyMap(None, None, {n: n for n in names})


def adapter_tensor_names(adapter: AdapterDir) -> list[str]:
    """Model names of the base tensors the adapter needs: module weights and saved modules."""
    from registry.peft_dir import PROMPT_METHODS

    if adapter.peft_type in PROMPT_METHODS:
        return []
    names = [module_tensor_name(adapter, m) for m in adapter.modules]
    names += [saved_target(k) for k in adapter.extra_tensors]
    return names


def module_tensor_name(adapter: AdapterDir, module: str) -> str:
    """The model tensor an adapted module changes: its weight, or for LoRA on parameters
    (`target_parameters`, e.g. fused MoE experts) the targeted parameter itself."""
    for target in adapter.config.get("target_parameters") or ():
        param = str(target).rsplit(".", 1)[-1]
        if f"{module}.{param}".endswith(str(target)):
            return f"{module}.{param}"
    return f"{module}.weight"


def saved_target(key: str) -> str:
    """The model name a saved modules_to_save / embedding tensor replaces."""
    return key.replace(".modules_to_save.", ".").replace(".base_layer.", ".")


def key_map(adapter: AdapterDir, ckpt: Checkpoint, *, need_ties: bool = False) -> KeyMap:
    """The key map for this adapter on this checkpoint.

    When every name the adapter needs is stored under the same name (and ties do not matter
    to the caller) names are used as they are, without importing transformers. Otherwise the
    adapter's model class is built on the meta device from the base's config.
    need_ties: the caller changes weights, so tied pairs must be known even when names match.
    """
    stored = ckpt.tensors
    wanted = adapter_tensor_names(adapter)
    all_found = all(n in stored for n in wanted)
    if all_found and not (need_ties and _may_tie(ckpt.config)):
        return identity_map(stored)
    config = ckpt.config
    if not config.get("model_type"):
        return identity_map(stored)
    try:
        import transformers  # noqa: F401
    except ImportError:
        return identity_map(stored)
    return _transformers_map(adapter, ckpt, config, wanted)


def _may_tie(config: Mapping[str, Any]) -> bool:
    """Whether any (sub)config of this model may tie weights (missing key: class default)."""
    if config.get("tie_word_embeddings", True) is not False:
        return True
    return any(isinstance(v, dict) and v.get("tie_word_embeddings") is True
               for v in config.values())


def candidate_classes(adapter: AdapterDir, config: Mapping[str, Any]) -> list[str]:
    """Model classes the adapter may have been trained on, most likely first."""
    from transformers.models.auto import modeling_auto

    out: list[str] = []
    auto = adapter.config.get("auto_mapping")
    if isinstance(auto, dict) and isinstance(auto.get("base_model_class"), str):
        out.append(auto["base_model_class"])
    model_type = str(config.get("model_type"))
    task = adapter.task_type
    if task in _TASK_MAPPINGS:
        names = getattr(modeling_auto, _TASK_MAPPINGS[task], {})
        if model_type in names:
            out.append(names[model_type])
    archs = config.get("architectures")
    if isinstance(archs, list):
        out += [str(a) for a in archs]
    for mapping in ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
                    "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
                    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "MODEL_MAPPING_NAMES"):
        names = getattr(modeling_auto, mapping, {})
        if model_type in names:
            out.append(names[model_type])
    return list(dict.fromkeys(out))


def _transformers_map(adapter: AdapterDir, ckpt: Checkpoint, config: dict[str, Any],
                      wanted: list[str]) -> KeyMap:
    import transformers

    best: KeyMap | None = None
    best_found = -1
    for class_name in candidate_classes(adapter, config):
        cls = getattr(transformers, class_name, None)
        if cls is None:
            continue
        km = build_map(cls, ckpt, config)
        if km is None:
            continue
        found = sum(km.checkpoint_name(n) is not None or km.fused_reason(n) is not None
                    or km.model_name(n) in km.model_shapes for n in wanted)
        if found == len(wanted):
            return _with_head_sizes(adapter, km, cls, ckpt, config)
        if found > best_found:
            best, best_found = km, found
    if best is None:
        return identity_map(ckpt.tensors)
    return best


def _with_head_sizes(adapter: AdapterDir, km: KeyMap, cls: Any, ckpt: Checkpoint,
                     config: dict[str, Any]) -> KeyMap:
    """Rebuild with num_labels taken from a new classification head when the config differs."""
    if adapter.task_type not in LABEL_TASKS:
        return km
    for key, info in adapter.extra_tensors.items():
        name = km.model_name(saved_target(key))
        want = km.model_shapes.get(name)
        if km.checkpoint_name(name) is not None or want is None:
            continue
        got = tuple(info.shape)
        if got != tuple(want) and len(got) >= 1 and got[1:] == tuple(want)[1:]:
            labels = got[0]
            rebuilt = build_map(cls, ckpt, {**config, **_labels(labels)})
            if rebuilt is not None and tuple(rebuilt.model_shapes.get(name, ())) == got:
                return KeyMap(rebuilt.model_class, rebuilt.base_model_prefix, rebuilt.stored,
                              rebuilt.fused, rebuilt.tied, rebuilt.model_shapes,
                              {**km.config_updates, **_labels(labels)})
    return km


def _labels(n: int) -> dict[str, Any]:
    id2label = {str(i): f"LABEL_{i}" for i in range(n)}
    return {"id2label": id2label, "label2id": {v: int(k) for k, v in id2label.items()}}


def build_map(cls: Any, ckpt: Checkpoint, config: Mapping[str, Any]) -> KeyMap | None:
    """Load-time names of every checkpoint tensor for model class `cls`, from its meta model."""
    meta = meta_model(cls, config, ckpt)
    if meta is None:
        return None
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        rename_source_key,
    )

    try:
        transforms = get_model_conversion_mapping(meta)
    except Exception:  # noqa: BLE001  # a class transformers cannot map: use names as they are
        transforms = []
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    prefix = meta.base_model_prefix or None
    stored: dict[str, str] = {}
    fused: dict[str, list[str]] = {}
    for key in ckpt.tensors:
        renamed, pattern = rename_source_key(key, renamings, converters, prefix, shapes)
        if renamed not in shapes and key in shapes:
            renamed, pattern = rename_source_key(key, [], [], prefix, shapes)
        if pattern is not None:
            fused.setdefault(renamed, []).append(key)
        elif renamed not in stored:
            stored[renamed] = key
    tied = dict(getattr(meta, "all_tied_weights_keys", {}) or {})
    return KeyMap(type(meta).__name__, prefix, stored, fused, tied, shapes)


def meta_model(cls: Any, config: Mapping[str, Any], ckpt: Checkpoint) -> Any:
    """An instance of `cls` on the meta device (no memory for weights), or None."""
    import torch
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.for_model(**_plain_config(config))
    except Exception:  # noqa: BLE001  # unknown model_type: this transformers cannot help
        try:
            cfg = AutoConfig.from_pretrained(str(ckpt.path), local_files_only=True)
        except Exception:  # noqa: BLE001
            return None
    try:
        with torch.device("meta"):
            return cls(cfg)
    except Exception:  # noqa: BLE001  # the class does not fit this config (another family)
        return None


def _plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(dict(config)))
    data.pop("transformers_version", None)
    return data


def check_not_fused(km: KeyMap, name: str, module: str, method: str) -> None:
    """Refuse to merge into a model tensor that transformers builds from several tensors."""
    reason = km.fused_reason(name)
    if reason is not None:
        raise UnsupportedMethod(f"{method} on {module}", "merged",
                                f"{reason}; adapt does not merge into converted tensors")
