"""References to adapter versions: `name`, `name@3`, `name:tag`, `sha256:<prefix>`.

They parse and print back to the same string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidName, InvalidReference

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_HEX_RE = re.compile(r"^[0-9a-f]{4,64}$")
# ASCII digits only (str.isdigit accepts '١' and '²'); versions fit a signed 32-bit column
_VERSION_RE = re.compile(r"^[0-9]{1,10}$", re.ASCII)
MAX_VERSION = 2**31 - 1


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a valid adapter or tag name, else raise InvalidName."""
    if not name:
        raise InvalidName(name, f"empty {what}")
    if "/" in name or "\\" in name:
        raise InvalidName(name, "contains a slash")
    if ".." in name:
        raise InvalidName(name, "contains '..'")
    if any(c.isspace() for c in name):
        raise InvalidName(name, "contains whitespace")
    if not NAME_RE.match(name):
        raise InvalidName(name, f"not a valid {what}")
    return name


@dataclass(frozen=True)
class Ref:
    name: str | None = None
    version: int | None = None
    tag: str | None = None
    digest: str | None = None  # hex prefix of a version's manifest digest

    @classmethod
    def parse(cls, text: str) -> Ref:
        text = text.strip()
        if not text:
            raise InvalidReference(text, "empty")
        if text.startswith("sha256:"):
            prefix = text[len("sha256:") :].lower()
            if not _HEX_RE.match(prefix):
                raise InvalidReference(text, "a digest prefix needs 4-64 hex digits")
            return cls(digest=prefix)
        if "@" in text:
            name, _, version = text.partition("@")
            if not _VERSION_RE.match(version) or not 1 <= int(version) <= MAX_VERSION:
                raise InvalidReference(
                    text, f"a version is a positive integer up to {MAX_VERSION} (ASCII digits)")
            return cls(name=_checked(text, name), version=int(version))
        if ":" in text:
            name, _, tag = text.partition(":")
            return cls(name=_checked(text, name), tag=_checked(text, tag, "tag"))
        return cls(name=_checked(text, text))

    def __str__(self) -> str:
        if self.digest is not None:
            return f"sha256:{self.digest}"
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.tag is not None:
            return f"{self.name}:{self.tag}"
        return str(self.name)


def _checked(text: str, name: str, what: str = "name") -> str:
    try:
        return check_name(name, what)
    except InvalidName as error:
        raise InvalidReference(text, error.message) from None
