"""Typed errors. Each carries the fields its message needs; the CLI maps classes to exit codes."""

from __future__ import annotations


class AdaptError(Exception):
    """Base of every error adapt raises on purpose. `str(error)` is one line that names the fix."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(AdaptError):
    """Arguments that cannot work together, or a malformed value."""


class InvalidReference(UsageError):
    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        super().__init__(
            f"invalid reference {text!r}: {reason}",
            "use NAME, NAME@VERSION, NAME:TAG or sha256:PREFIX",
        )


class UnsafeOutputDir(UsageError):
    """An output directory that is, contains or lies inside something adapt reads or owns."""

    def __init__(self, out_dir: object, relation: str, other: str, hint: str) -> None:
        self.out_dir = str(out_dir)
        self.relation = relation  # "is", "contains" or "is inside"
        self.other = other  # what it overlaps, e.g. "the base model's directory"
        super().__init__(f"--out {out_dir} {relation} {other}", hint)


class InvalidName(UsageError):
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(
            f"invalid name {name!r}: {reason}",
            "names use lowercase letters, digits and -_. and start with a letter or digit",
        )


class NotFound(AdaptError):
    def __init__(self, kind: str, what: str, hint: str | None = None) -> None:
        self.kind = kind
        self.what = what
        super().__init__(f"{kind} not found: {what}", hint)


class AlreadyExists(AdaptError):
    def __init__(self, what: str, hint: str | None = None) -> None:
        self.what = what
        super().__init__(f"already exists: {what}", hint)


class InUse(AdaptError):
    """An object others depend on (versions, tags, lineage) cannot be removed without --force."""

    def __init__(self, what: str, users: list[str], hint: str | None = None) -> None:
        self.what = what
        self.users = users
        shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
        super().__init__(f"{what} is in use: {shown}", hint or "pass --force to remove it anyway")


class InvalidAdapter(AdaptError):
    """The adapter directory or its files are not a usable PEFT adapter."""

    def __init__(self, path: object, reason: str, hint: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}", hint)


class NonFiniteTensor(InvalidAdapter):
    def __init__(self, path: object, tensor: str, count: int) -> None:
        self.tensor = tensor
        self.count = count
        super().__init__(
            path,
            f"tensor {tensor} has {count} NaN/Inf values",
            "pass --allow-nonfinite to register it anyway",
        )


class PickleRefused(InvalidAdapter):
    def __init__(self, path: object) -> None:
        super().__init__(
            path,
            "adapter_model.bin is a pickle, which can run code when loaded; refusing it",
            "pass --convert-pickle to load it with torch.load(weights_only=True) "
            "and store safetensors",
        )


class InvalidModel(AdaptError):
    """A base or merged model directory that cannot be read."""

    def __init__(self, path: object, reason: str, hint: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}", hint)


class IncompatibleBase(AdaptError):
    def __init__(
        self,
        module: str,
        adapter_shape: tuple[int, ...] | None,
        base_shape: tuple[int, ...] | None,
        detail: str | None = None,
    ) -> None:
        self.module = module
        self.adapter_shape = adapter_shape
        self.base_shape = base_shape
        if base_shape is None:
            msg = f"incompatible base: module {module} is not in the base model"
        else:
            msg = (
                f"incompatible base: module {module} expects weight shape "
                f"{_shape(adapter_shape)} but the base has {_shape(base_shape)}"
            )
        if detail:
            msg = f"{msg} ({detail})"
        super().__init__(msg, "pass the base model the adapter was trained on")


class IntegrityError(AdaptError):
    def __init__(self, what: str, expected: str | None, actual: str | None) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"integrity check failed for {what}: expected {expected}, got {actual}",
            "the bytes changed after they were recorded; run `adapt fsck`",
        )


class UnsupportedMethod(AdaptError):
    def __init__(self, method: str, operation: str, reason: str) -> None:
        self.method = method
        self.operation = operation
        self.reason = reason
        super().__init__(f"{method} adapters cannot be {operation}: {reason}")


class GateFailed(AdaptError):
    def __init__(self, failed: list[str]) -> None:
        self.failed = failed
        super().__init__(f"gate failed: {'; '.join(failed)}")


class InsufficientDisk(AdaptError):
    def __init__(self, path: object, needed: int, free: int) -> None:
        self.path = str(path)
        self.needed = needed
        self.free = free
        super().__init__(
            f"not enough free disk at {path}: need {needed / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB free",
            "free some space or choose another --out",
        )


class MissingDependency(AdaptError):
    def __init__(self, package: str, purpose: str, install: str | None = None) -> None:
        self.package = package
        self.install = install or package
        super().__init__(
            f"{package} is needed to {purpose}", f"install it with `pip install {self.install}`"
        )


class RegistryUnavailable(AdaptError):
    """The registry cannot be opened: ADAPT_HOME not writable, or the database unreachable."""

    def __init__(self, where: str, reason: str, hint: str | None = None) -> None:
        self.where = where  # a path, or a database URL with its password redacted
        self.reason = reason
        super().__init__(f"cannot open the registry at {where}: {reason}", hint)


class StorageFull(AdaptError):
    """A write failed for lack of space (ENOSPC, EDQUOT, SQLite's "disk is full"): nothing
    half-written was kept."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"no space left on the device of {where}",
                         "free some space and run the command again")


class ReadOnlyStorage(AdaptError):
    """A write to a read-only file system or database; reads still work."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"{where} is read-only: this command writes",
                         "reads such as `adapt list` and `adapt show` still work")


class QuantizationUnavailable(AdaptError):
    """bitsandbytes is installed but cannot quantize on this machine (no backend for it)."""

    def __init__(self, quant_type: str, reason: str) -> None:
        self.quant_type = quant_type
        self.reason = reason
        super().__init__(
            f"bitsandbytes cannot quantize to {quant_type} here: {reason}",
            "install a bitsandbytes build with a backend for this device (CPU needs >= 0.45)",
        )


class RemoteError(AdaptError):
    """The Hub (or another remote) failed or refused."""


class AuthError(RemoteError):
    pass


class ConsistencyError(AdaptError):
    """`adapt fsck` found problems; `problems` lists them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) found", "run `adapt gc` for orphan blobs")


def _shape(shape: tuple[int, ...] | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


def storage_error(error: BaseException) -> AdaptError | None:
    """The typed error for a full or read-only disk (an OSError or SQLite's message), else None."""
    import errno

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(str(error.filename or "the registry"))
    if isinstance(error, OSError) and error.errno == errno.EROFS:
        return ReadOnlyStorage(str(error.filename or "the registry"))
    text = str(error).lower()
    if "database or disk is full" in text:
        return StorageFull("the registry database")
    if "readonly database" in text or "read-only file system" in text:
        return ReadOnlyStorage("the registry database")
    return None
