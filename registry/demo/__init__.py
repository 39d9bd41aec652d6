"""The quickstart behind `adapt demo`: a real base model, two trained adapters, every step."""

from registry.demo.models import convert_smollm2, make_tiny_base, smollm2_gguf_path
from registry.demo.quickstart import DemoStepFailed, load_demo_texts, run_quickstart
from registry.demo.train import train_lora

__all__ = ["DemoStepFailed", "convert_smollm2", "load_demo_texts", "make_tiny_base",
           "run_quickstart", "smollm2_gguf_path", "train_lora"]
