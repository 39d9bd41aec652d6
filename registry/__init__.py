"""adapt: an adapter registry and model-ops toolkit for parameter-efficient fine-tuning.

`from registry import Registry` is the library's entry point. Importing this package loads
nothing heavy: torch, peft, transformers, bitsandbytes and textual load inside the functions
that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from registry.registry import Registry

__all__ = ["Registry", "__version__"]


def __getattr__(name: str) -> Any:
    # sqlmodel/sqlalchemy cost ~0.2 s to import; `adapt --help` should not pay it.
    if name == "Registry":
        from registry.registry import Registry

        return Registry
    raise AttributeError(name)
