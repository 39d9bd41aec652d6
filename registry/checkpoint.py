"""A model checkpoint directory of safetensors files: single-file or sharded with an index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from registry.errors import InvalidModel
from registry.safeparse import ParseLimitError, cap, load_json, read_limited
from registry.safetensors_header import HeaderError, SafetensorsHeader, TensorInfo, read_header

INDEX_SUFFIX = ".safetensors.index.json"


@dataclass
class Checkpoint:
    path: Path
    files: list[Path]  # safetensors files in index order (or sorted)
    headers: dict[Path, SafetensorsHeader]
    index_file: Path | None

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        """Every tensor by name, across shards."""
        out: dict[str, TensorInfo] = {}
        for header in self.headers.values():
            out.update(header.tensors)
        return out

    def file_of(self) -> dict[str, Path]:
        return {name: h.path for h in self.headers.values() for name in h.tensors}

    @property
    def total_bytes(self) -> int:
        return sum(h.file_size for h in self.headers.values())

    @property
    def config(self) -> dict:
        cfg = self.path / "config.json"
        if cfg.is_file():
            try:
                data = load_json(read_limited(cfg, 16 * 1024 * 1024))
                return data if isinstance(data, dict) else {}
            except (ParseLimitError, OSError):
                return {}
        return {}

    @property
    def architecture(self) -> str | None:
        archs = self.config.get("architectures")
        if isinstance(archs, list) and archs:
            return str(archs[0])
        mt = self.config.get("model_type")
        return str(mt) if mt else None


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Find and parse the safetensors files of a model directory (or a single file)."""
    path = Path(path)
    if not path.exists():
        raise InvalidModel(path, "no such file or directory")
    if path.is_file():
        files, index_file = [path], None
        root = path.parent
    else:
        root = path
        indexes = sorted(path.glob("*" + INDEX_SUFFIX))
        index_file = indexes[0] if indexes else None
        if index_file is not None:
            files = [path / f for f in dict.fromkeys(_weight_map(path, index_file).values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise InvalidModel(
                    path, f"shard {missing[0]} named in {index_file.name} is missing"
                )
        else:
            files = sorted(path.glob("*.safetensors"))
        if not files:
            hint = "convert it to safetensors first" if any(path.glob("*.bin")) else None
            raise InvalidModel(path, "no .safetensors weights found", hint)
    headers: dict[Path, SafetensorsHeader] = {}
    seen: dict[str, Path] = {}
    for f in files:
        try:
            header = read_header(f)
        except HeaderError as error:
            raise InvalidModel(f, str(error)) from None
        except OSError as error:  # unreadable, or a directory named like a shard
            raise InvalidModel(f, f"cannot read it: {error.strerror or error}") from None
        for name in header.tensors:
            if name in seen:
                raise InvalidModel(root, f"tensor {name} appears in {seen[name].name} and {f.name}")
            seen[name] = f
        headers[f] = header
    return Checkpoint(root, files, headers, index_file)


def _weight_map(root: Path, index_file: Path) -> dict[str, str]:
    """The index's tensor -> shard file map, checked: names are strings and every shard is a
    plain file name inside the model directory (a hostile index must not point elsewhere)."""
    try:
        data = load_json(read_limited(index_file, 64 * 1024 * 1024),
                         max_bytes=64 * 1024 * 1024)
    except ParseLimitError as error:
        raise InvalidModel(root, f"{index_file.name} is not a valid index: {error}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidModel(root, f"{index_file.name} is not a valid index: no weight_map object")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise InvalidModel(root, f"{index_file.name}: weight_map[{cap(repr(tensor), 80)}] "
                               "is not a file name")
        parts = PurePosixPath(shard).parts
        if (not shard.endswith(".safetensors") or "\\" in shard or not parts
                or PurePosixPath(shard).is_absolute() or ".." in parts or "\0" in shard):
            raise InvalidModel(root, f"{index_file.name}: shard {cap(repr(shard), 80)} is not a "
                               ".safetensors file inside the model directory")
    return weight_map
