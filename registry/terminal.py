"""Text from files, manifests and servers made safe to print on a terminal.

A note, a base-model name from an adapter config or an error body from a Hub server may hold
escape sequences (`ESC ] 52` rewrites the clipboard, `ESC [ 2J` clears the screen, bidi
overrides reorder what is shown). `printable` turns every control character into a visible
escape; `redact_secrets` removes tokens a server echoed back before a line reaches stderr.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

# C0 controls, DEL, C1 controls, and the bidi embedding/override/isolate characters
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Hugging Face user/org access tokens, and anything sent as a bearer token
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{8,}")
_BEARER = re.compile(r"(?i)\b(bearer|authorization:?)\s+[A-Za-z0-9._~+/=-]{8,}")
TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def has_control(text: str) -> bool:
    """Whether `text` holds a character a terminal would act on instead of showing."""
    return _UNSAFE.search(text) is not None


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """`text` with every control character shown as `\\xNN` (newlines kept if asked)."""
    s = str(text)
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_escape, line) for line in s.split("\n"))
    return _UNSAFE.sub(_escape, s)


def known_secrets() -> list[str]:
    """Tokens this process may have sent: from the environment and, once huggingface_hub is
    loaded (a Hub call happened), the token it would use."""
    secrets = [os.environ[v] for v in TOKEN_ENV_VARS if os.environ.get(v)]
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub import get_token

            token = get_token()
        except Exception:  # a broken token file must not hide the error being printed
            token = None
        if token:
            secrets.append(token)
    return [s for s in secrets if len(s) >= 8]


def redact_secrets(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with tokens replaced by `***`: the known ones, `hf_...` and bearer tokens."""
    for secret in secrets if secrets is not None else known_secrets():
        text = text.replace(secret, "***")
    text = _HF_TOKEN.sub("hf_***", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)


def safe_line(text: str) -> str:
    """One error line fit for a terminal and a log: secrets redacted, controls escaped."""
    return printable(redact_secrets(" ".join(str(text).split("\n"))))
