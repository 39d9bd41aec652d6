from __future__ import annotations

import pytest

from registry.errors import InvalidReference
from registry.refs import Ref


@pytest.mark.parametrize("text", ["support-lora", "support-lora@3", "support-lora:prod",
                                  "sha256:abcd12", "a.b_c-1@12", "x:staging-2"])
def test_refs_parse_and_print_back_to_the_same_string(text: str) -> None:
    assert str(Ref.parse(text)) == text


def test_ref_parts_are_parsed() -> None:
    assert Ref.parse("n@3") == Ref(name="n", version=3)
    assert Ref.parse("n:prod") == Ref(name="n", tag="prod")
    assert Ref.parse("sha256:ABCDEF") == Ref(digest="abcdef")


@pytest.mark.parametrize("text", ["", "n@0", "n@x", "a/b", "../x", "has space", "sha256:zz",
                                  "sha256:ab", "n:"])
def test_bad_refs_raise_a_one_line_error(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        Ref.parse(text)
    assert "\n" not in str(info.value)
