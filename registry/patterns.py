"""Regular expressions from files (rank_pattern, alpha_pattern keys), matched in bounded time.

PEFT matches a pattern key against a module name with `re.match(rf"(.*\\.)?({key})$", name)`.
Python's backtracking engine takes exponential time on keys such as `(.*)*X`, and a key comes
from a file anyone can publish. adapt parses the key with Python's own regex parser, so the
syntax and character classes are exactly Python's, and runs it as a Thompson NFA: time is
linear in the name (times the pattern's size) whatever the key. Constructs that are not regular
(backreferences, lookaround, conditionals, atomic groups, possessive repeats) are refused.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

try:  # Python 3.11 renamed the private modules; the parse tree is the same
    from re import _constants as _c  # type: ignore[attr-defined]
    from re import _parser as _p  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

MAX_PATTERN_CHARS = 1000
MAX_STATES = 5000  # after expanding counted repeats such as x{1000}
_FAST_NAME_CHARS = 512
_ONE_CHAR = {_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN}


class PatternError(ValueError):
    """A pattern adapt will not run: invalid, too large, or not a regular expression."""


@dataclass(eq=False)  # compared and hashed by identity
class _State:
    # kind: "char" (test, then next), "split" (next and alt), "assert" (test at position), "match"
    kind: str
    test: Any = None  # "char": (ch) -> bool; "assert": (name, pos) -> bool
    next: _State | None = None
    alt: _State | None = None
    id: int = field(default=0)


@dataclass(frozen=True)
class BoundedPattern:
    """A compiled PEFT pattern key: `matches(name)` is `re.match(rf"(.*\\.)?({key})$", name)`."""

    key: str
    start: _State
    fast: re.Pattern[str] | None = None  # Python's re, where it cannot backtrack badly

    def matches(self, name: str) -> bool:
        if self.fast is not None and len(name) <= _FAST_NAME_CHARS:
            return self.fast.match(name) is not None
        return _nfa_matches(self.start, name)


@functools.lru_cache(maxsize=65536)
def _nfa_matches(start: _State, name: str) -> bool:
    """Thompson simulation: the set of live states advances one character at a time."""
    # re.match needs the pattern to match a prefix: reaching the match state anywhere wins
    current = _closure([start], name, 0)
    for pos, char in enumerate(name):
        if not current or any(s.kind == "match" for s in current):
            break
        step = [s.next for s in current if s.kind == "char" and s.test(char)]
        current = _closure([s for s in step if s is not None], name, pos + 1)
    return any(s.kind == "match" for s in current)


def _closure(states: list[_State], name: str, pos: int) -> list[_State]:
    """The states reachable from `states` without reading a character (assertions tested)."""
    seen: set[int] = set()
    out: list[_State] = []
    stack = list(reversed(states))
    while stack:
        s = stack.pop()
        if s.id in seen:
            continue
        seen.add(s.id)
        if s.kind == "split":
            stack.extend(x for x in (s.alt, s.next) if x is not None)
        elif s.kind == "assert":
            if s.test(name, pos) and s.next is not None:
                stack.append(s.next)
        else:
            out.append(s)
    return out


def compile_regex(pattern: str) -> BoundedPattern:
    """Compile a regular expression from a file; `matches(name)` is `re.match(pattern, name)`.

    Raises PatternError for invalid syntax, non-regular constructs or too large an expansion.
    """
    return _compile(pattern, pattern, pattern)


def compile_pattern_key(key: str) -> BoundedPattern:
    """Compile a rank_pattern/alpha_pattern key the way PEFT's get_pattern_key wraps it."""
    return _compile(rf"(.*\.)?({key})$" if isinstance(key, str) else key, key, key)


def fullmatch(pattern: str, name: str) -> bool:
    """`re.fullmatch(pattern, name) is not None`, in bounded time (PatternError if refused)."""
    return _compile(rf"(?:{pattern})\Z" if isinstance(pattern, str) else pattern, pattern,
                    pattern).matches(name)


@functools.lru_cache(maxsize=4096)
def _compile(full: str, shown: str, core: str) -> BoundedPattern:
    """`full` compiled; `shown` names it in errors; `core` (the part from the file) decides
    whether Python's own engine is safe to use."""
    if not isinstance(shown, str):
        raise PatternError(f"pattern {str(shown)[:60]!r} is not a string")
    if len(shown) > MAX_PATTERN_CHARS:
        raise PatternError(f"pattern is {len(shown)} characters (at most {MAX_PATTERN_CHARS})")
    try:
        re.compile(full)  # Python's own verdict on the syntax (compiling does not match)
        parsed = _p.parse(full)
        fast_ok = _single_simple_repeat(_p.parse(core))
    except (re.error, RecursionError, OverflowError, ValueError) as error:
        raise PatternError(f"pattern {shown[:60]!r} is not a valid regular expression: "
                           f"{str(error)[:80]}") from None
    builder = _Builder(parsed.state.flags)
    match = builder.new("match")
    start = builder.seq(list(parsed), match, parsed.state.flags)
    return BoundedPattern(shown, start, re.compile(full) if fast_ok else None)


def pattern_key(pattern_keys: Iterable[str], module: str) -> str:
    """The first pattern that matches `module` as PEFT's get_pattern_key does, else `module`."""
    for key in pattern_keys:
        if compile_pattern_key(key).matches(module):
            return key
    return module


def check_pattern_keys(pattern_keys: Iterable[Any]) -> None:
    """Raise PatternError for the first key adapt will not run."""
    for key in pattern_keys:
        compile_pattern_key(key)


def _single_simple_repeat(items: Any) -> bool:
    """At most one repeat, over one character: re's backtracking then stays polynomial (with
    PEFT's `(.*\\.)?` prefix, quadratic in the name times the pattern)."""
    repeats = 0
    stack = [list(items)]
    while stack:
        for op, av in stack.pop():
            if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
                repeats += 1
                body = list(av[2])
                if repeats > 1 or len(body) != 1 or body[0][0] not in _ONE_CHAR:
                    return False
            elif op is _c.SUBPATTERN:
                stack.append(list(av[3]))
            elif op is _c.BRANCH:
                stack.extend(list(b) for b in av[1])
    return True


# -- compilation of Python's parse tree to an NFA --------------------------------------------

def _is_word(ch: str, ascii_only: bool) -> bool:
    return (ch.isascii() or not ascii_only) and (ch.isalnum() or ch == "_")


class _Builder:
    def __init__(self, flags: int) -> None:
        self.count = 0
        self.ascii = bool(flags & re.ASCII)

    def new(self, kind: str, test: Any = None, next: _State | None = None,
            alt: _State | None = None) -> _State:
        self.count += 1
        if self.count > MAX_STATES:
            raise PatternError(f"pattern expands to more than {MAX_STATES} states")
        return _State(kind, test, next, alt, self.count)

    def seq(self, items: list[tuple[Any, Any]], tail: _State, flags: int) -> _State:
        for op, av in reversed(items):
            tail = self.item(op, av, tail, flags)
        return tail

    def item(self, op: Any, av: Any, tail: _State, flags: int) -> _State:
        ic = bool(flags & re.IGNORECASE)
        if op is _c.LITERAL:
            return self.new("char", _literal(av, ic), tail)
        if op is _c.NOT_LITERAL:
            test = _literal(av, ic)
            return self.new("char", lambda ch: not test(ch), tail)
        if op is _c.ANY:
            dotall = bool(flags & re.DOTALL)
            return self.new("char", lambda ch: dotall or ch != "\n", tail)
        if op is _c.IN:
            return self.new("char", self.charset(av, ic, flags), tail)
        if op is _c.BRANCH:
            _, branches = av
            head: _State | None = None
            for branch in reversed(branches):
                start = self.seq(list(branch), tail, flags)
                head = start if head is None else self.new("split", None, start, head)
            assert head is not None
            return head
        if op is _c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            return self.seq(list(sub), tail, (flags | add_flags) & ~del_flags)
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            low, high, sub = av
            # greedy and lazy repeats accept the same names: only where a match ends differs
            return self.repeat(list(sub), low, high, tail, flags)
        if op is _c.AT:
            return self.new("assert", self.at(av, flags), tail)
        name = getattr(op, "name", str(op))
        raise PatternError(f"patterns with {name.lower().replace('_', ' ')} are not supported "
                           "(adapt runs only regular expressions from files)")

    def repeat(self, sub: list[tuple[Any, Any]], low: int, high: int, tail: _State,
               flags: int) -> _State:
        if high is _c.MAXREPEAT:
            # star: split -> (sub -> back to split) | tail
            loop = self.new("split", None, None, tail)
            loop.next = self.seq(sub, loop, flags)
            head = loop
        else:
            # optional copies: each one is taken (then maybe the next) or skipped to the tail
            head = tail
            for _ in range(high - low):
                head = self.new("split", None, self.seq(sub, head, flags), tail)
        for _ in range(low):
            head = self.seq(sub, head, flags)
        return head

    def charset(self, items: list[tuple[Any, Any]], ic: bool,
                flags: int) -> Callable[[str], bool]:
        negate = False
        tests: list[Callable[[str], bool]] = []
        for op, av in items:
            if op is _c.NEGATE:
                negate = True
            elif op is _c.LITERAL:
                tests.append(_literal(av, ic))
            elif op is _c.RANGE:
                tests.append(_range(av[0], av[1], ic))
            elif op is _c.CATEGORY:
                tests.append(self.category(av, flags))
            else:
                raise PatternError(f"character set item {op} is not supported")

        def test(ch: str) -> bool:
            return any(t(ch) for t in tests) != negate

        return test

    def category(self, cat: Any, flags: int) -> Callable[[str], bool]:
        a = self.ascii or bool(flags & re.ASCII)
        table: dict[Any, Callable[[str], bool]] = {
            _c.CATEGORY_DIGIT: lambda ch: ch.isdecimal() and (ch.isascii() or not a),
            _c.CATEGORY_NOT_DIGIT: lambda ch: not (ch.isdecimal() and (ch.isascii() or not a)),
            _c.CATEGORY_SPACE: lambda ch: ch.isspace() and (ch.isascii() or not a),
            _c.CATEGORY_NOT_SPACE: lambda ch: not (ch.isspace() and (ch.isascii() or not a)),
            _c.CATEGORY_WORD: lambda ch: _is_word(ch, a),
            _c.CATEGORY_NOT_WORD: lambda ch: not _is_word(ch, a),
        }
        if cat not in table:
            raise PatternError(f"character class {cat} is not supported")
        return table[cat]

    def at(self, where: Any, flags: int) -> Callable[[str, int], bool]:
        multiline = bool(flags & re.MULTILINE)
        a = self.ascii or bool(flags & re.ASCII)

        def boundary(s: str, i: int) -> bool:
            before = i > 0 and _is_word(s[i - 1], a)
            after = i < len(s) and _is_word(s[i], a)
            return before != after

        table: dict[Any, Callable[[str, int], bool]] = {
            _c.AT_BEGINNING: lambda s, i: i == 0 or (multiline and s[i - 1] == "\n"),
            _c.AT_BEGINNING_STRING: lambda s, i: i == 0,
            _c.AT_END: lambda s, i: (i == len(s) or (i == len(s) - 1 and s[i] == "\n")
                                     or (multiline and s[i] == "\n")),
            _c.AT_END_STRING: lambda s, i: i == len(s),
            _c.AT_BOUNDARY: boundary,
            _c.AT_NON_BOUNDARY: lambda s, i: not boundary(s, i),
        }
        if where not in table:
            raise PatternError(f"anchor {where} is not supported")
        return table[where]


def _literal(code: int, ic: bool) -> Callable[[str], bool]:
    ch = chr(code)
    if ic:
        folded = ch.lower()
        return lambda c: c.lower() == folded
    return lambda c: c == ch


def _range(lo: int, hi: int, ic: bool) -> Callable[[str], bool]:
    if ic:
        return lambda c: (lo <= ord(c) <= hi or lo <= ord(c.lower()) <= hi
                          or lo <= ord(c.upper()) <= hi)
    return lambda c: lo <= ord(c) <= hi
