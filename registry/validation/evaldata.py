"""Eval texts and their token ids: a user's file or the shipped default set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry.errors import NotFound, UsageError
from registry.safeparse import ParseLimitError, load_json

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "eval" / "default.jsonl"
DEFAULT_NAME = "adapt-default-eval"
MAX_LINE_BYTES = 16 * 1024 * 1024
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


@dataclass(frozen=True)
class EvalTexts:
    texts: list[str]
    source: str  # the file, or DEFAULT_NAME
    dataset: str  # short name stored with scores


@dataclass(frozen=True)
class EvalTokens:
    sequences: list[list[int]]
    tokenizer: str  # what produced the ids, said in the report


def load_texts(data: str | Path | None, max_samples: int | None = None) -> EvalTexts:
    """Texts from a JSONL file (a `text` field per line) or plain text (one per line).

    data: None for the default set shipped with adapt.
    """
    path = Path(data) if data is not None else DEFAULT_DATA
    if not path.is_file():
        raise NotFound("eval data file", str(path))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"eval data {path} is not UTF-8 text") from None
    except OSError as error:
        raise UsageError(f"cannot read eval data {path}: {error.strerror or error}") from None
    jsonl = path.suffix in {".jsonl", ".json"} or (
        bool(lines) and lines[0].lstrip().startswith("{")
    )
    texts: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if jsonl:
            try:  # bounded: a 100k-deep line is refused, not a RecursionError
                row = load_json(line, max_bytes=MAX_LINE_BYTES, max_depth=16)
            except ParseLimitError as error:
                raise UsageError(f"{path}:{number}: not usable JSON ({error})",
                                 "use JSONL with a `text` field, or plain text") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UsageError(f"{path}:{number}: no string `text` field")
            text = row["text"]
        else:
            text = line
        if text.strip():
            texts.append(text)
        if max_samples is not None and len(texts) >= max_samples:
            break
    if not texts:
        raise UsageError(f"eval data {path} holds no texts")
    if data is None:
        return EvalTexts(texts, DEFAULT_NAME, DEFAULT_NAME)
    return EvalTexts(texts, str(path), path.name)


def has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / name).is_file() for name in TOKENIZER_FILES)


def tokenize(texts: list[str], model_dir: Path, vocab_size: int, max_length: int) -> EvalTokens:
    """Token ids per text: the model dir's tokenizer, else bytes mod vocab_size.

    The byte fallback is deterministic, so runs on a model without a tokenizer (tiny test
    models) still compare with each other; its perplexities mean little in absolute terms.
    """
    if has_tokenizer(model_dir):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        ids = [list(tok(t, truncation=True, max_length=max_length)["input_ids"]) for t in texts]
        desc = f"{type(tok).__name__} from {model_dir.name}"
    else:
        ids = [[b % vocab_size for b in t.encode("utf-8")][:max_length] for t in texts]
        desc = f"byte-level fallback (UTF-8 bytes mod {vocab_size}; the base has no tokenizer)"
    # one id predicts nothing
    return EvalTokens([s for s in ids if len(s) >= 2], desc)
