"""The key map: names used as they are when they match (no transformers import), transformers'
own loading metadata when they do not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from registry.checkpoint import open_checkpoint
from registry.keymap import key_map
from registry.peft_dir import read_adapter_dir


def test_matching_names_need_no_transformers(tiny_lora: Path, tiny_base: Path) -> None:
    # `adapt add --base` with an adapter whose names match stays fast: no transformers import
    code = (
        "import sys\n"
        "from registry.checkpoint import open_checkpoint\n"
        "from registry.compat import check_compatible\n"
        "from registry.peft_dir import read_adapter_dir\n"
        "report = check_compatible(read_adapter_dir(sys.argv[1]), open_checkpoint(sys.argv[2]))\n"
        "assert report.keymap.identity and not report.renamed and not report.new_heads\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tiny_lora), str(tiny_base)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_headless_names_map_with_prefix_both_ways(build_layout) -> None:
    layout = build_layout("gpt2-lora")  # adapter on GPT2LMHeadModel, base is a GPT2Model
    km = key_map(read_adapter_dir(layout.adapter), open_checkpoint(layout.base))
    assert km.model_class == "GPT2LMHeadModel" and km.base_model_prefix == "transformer"
    assert km.checkpoint_name("transformer.h.0.attn.c_attn.weight") == "h.0.attn.c_attn.weight"
    # a name given without the prefix resolves the same way
    assert km.checkpoint_name("h.0.attn.c_attn.weight") == "h.0.attn.c_attn.weight"
    # GPT-2 ties lm_head to wte, which the checkpoint stores once
    assert km.tie_partner("lm_head.weight") == "transformer.wte.weight"
    assert km.checkpoint_name("lm_head.weight") == "wte.weight"


def test_validation_delta_norms_read_base_weights_through_the_key_map(build_layout) -> None:
    from registry.peft_dir import load_tensors
    from registry.validation.checks import module_delta_norms

    layout = build_layout("gpt2-ia3")  # IA3's change depends on W: it needs the base weight
    adapter = read_adapter_dir(layout.adapter)
    norms, rel, why = module_delta_norms(adapter, open_checkpoint(layout.base),
                                         load_tensors(adapter))
    assert why is None
    assert set(rel) == set(adapter.modules) and all(v > 0 for v in rel.values())
