"""Exit codes are API: scripts and CI gates depend on them. Documented in the README."""

from __future__ import annotations

from enum import IntEnum

from registry import errors


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a gate failed, or fsck found problems
    USAGE = 2  # bad arguments or names
    NOT_FOUND = 3  # no such adapter, version, tag, base or file
    INTEGRITY = 4  # bytes do not match their recorded sha256
    INCOMPATIBLE = 5  # the adapter does not fit the base model
    INVALID_INPUT = 6  # an unreadable or malformed adapter or model
    UNSUPPORTED = 7  # the method cannot do the asked operation
    CONFLICT = 8  # the target already exists
    ENVIRONMENT = 9  # not enough disk, a missing package or device, registry cannot be opened
    REMOTE = 10  # the Hub failed or refused (network, permission, auth)
    INTERNAL = 70  # a bug: please report it with ADAPT_DEBUG=1 output


# Most specific class first; the first isinstance match wins.
EXIT_CODES: list[tuple[type[errors.AdaptError], ExitCode]] = [
    (errors.GateFailed, ExitCode.FAILED),
    (errors.ConsistencyError, ExitCode.FAILED),
    (errors.UsageError, ExitCode.USAGE),
    (errors.NotFound, ExitCode.NOT_FOUND),
    (errors.IntegrityError, ExitCode.INTEGRITY),
    (errors.IncompatibleBase, ExitCode.INCOMPATIBLE),
    (errors.InvalidAdapter, ExitCode.INVALID_INPUT),
    (errors.InvalidModel, ExitCode.INVALID_INPUT),
    (errors.UnsupportedMethod, ExitCode.UNSUPPORTED),
    (errors.AlreadyExists, ExitCode.CONFLICT),
    (errors.InUse, ExitCode.CONFLICT),
    (errors.InsufficientDisk, ExitCode.ENVIRONMENT),
    (errors.MissingDependency, ExitCode.ENVIRONMENT),
    (errors.StorageFull, ExitCode.ENVIRONMENT),
    (errors.ReadOnlyStorage, ExitCode.ENVIRONMENT),
    (errors.RegistryUnavailable, ExitCode.ENVIRONMENT),
    (errors.QuantizationUnavailable, ExitCode.ENVIRONMENT),
    (errors.RemoteError, ExitCode.REMOTE),
]


def exit_code_for(error: BaseException) -> ExitCode:
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return ExitCode.INTERNAL if not isinstance(error, errors.AdaptError) else ExitCode.FAILED
