"""The one registry type behind tasks, formats, binarizers, heads, colour maps and distillation options."""

from __future__ import annotations

import pytest

from bindense.registry import Registry


def test_register_lookup_aliases_and_errors() -> None:
    reg: Registry[int] = Registry("widget", "model.widget", aliases={"w1": "one"})
    assert reg.register("one", 1) == 1

    @reg.register("two")
    def two() -> int:
        return 2

    assert reg.lookup("one") == 1 and reg.lookup("w1") == 1 and reg.lookup("two") is two
    with pytest.raises(ValueError, match=r"unknown widget 'three' \(model.widget\); registered: one, two; aliases"):
        reg.lookup("three")
    with pytest.raises(ValueError, match="widget 'one' is already registered"):
        reg.register("one", 3)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("w1", 3)  # an alias name is taken too
    assert reg.register("one", 3, replace=True) == 3 and reg.lookup("one") == 3
    assert reg.unregister("w1") == 3 and "one" not in reg


def test_temporarily_undoes_the_registration_even_on_error() -> None:
    reg: Registry[str] = Registry("thing")
    with pytest.raises(RuntimeError), reg.temporarily("x", "value"):
        assert reg.lookup("x") == "value"
        raise RuntimeError
    assert "x" not in reg
    with pytest.raises(ValueError, match=r"unknown thing 'x'; registered: $"):
        reg.lookup("x")
