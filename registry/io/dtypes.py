"""safetensors dtype names <-> torch dtypes, and the CLI's short dtype names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.errors import UnsupportedMethod

if TYPE_CHECKING:
    import torch

# torch dtype name (without "torch.") -> safetensors dtype
TORCH_TO_ST: dict[str, str] = {
    "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64",
    "int8": "I8", "uint8": "U8", "int16": "I16", "int32": "I32", "int64": "I64",
    "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "uint16": "U16", "uint32": "U32", "uint64": "U64",
}
ST_TO_TORCH: dict[str, str] = {st: name for name, st in TORCH_TO_ST.items()}
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
# --dtype values -> safetensors dtype, and the name config.json uses for it
SHORT_DTYPES: dict[str, str] = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}
CONFIG_DTYPES: dict[str, str] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def st_dtype(tensor: torch.Tensor) -> str:
    """The safetensors dtype of a tensor; UnsupportedMethod for one safetensors cannot store."""
    try:
        return TORCH_TO_ST[str(tensor.dtype).removeprefix("torch.")]
    except KeyError:
        raise UnsupportedMethod(str(tensor.dtype), "written", "no safetensors dtype") from None


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name."""
    import torch

    try:
        result = getattr(torch, ST_TO_TORCH[dtype])
    except (KeyError, AttributeError):
        raise UnsupportedMethod(dtype, "read", "no torch dtype") from None
    assert isinstance(result, torch.dtype)
    return result
