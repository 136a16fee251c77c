"""The exception tree drawn in pdp.errors' docstring is the real one: every leaf it names exists
and derives from the category it is drawn under, so the drawing cannot drift from the code."""

import importlib
import re

import pytest

import pdp.errors

_CATEGORY = re.compile(r"^ [├└]── (\w+) ")
_LEAF = re.compile(r"^ [│ ]    [├└]── (pdp(?:\.\w+)+)\.(\w+)")


def _drawn() -> list[tuple[str, str, str]]:
    """(category, module, class) for every leaf in the docstring's tree."""
    leaves, category = [], ""
    for line in (pdp.errors.__doc__ or "").splitlines():
        if m := _CATEGORY.match(line):
            category = m.group(1)
        elif m := _LEAF.match(line):
            leaves.append((category, m.group(1), m.group(2)))
    return leaves


def test_the_tree_names_every_category() -> None:
    drawn = {category for category, _, _ in _drawn()}
    defined = {
        name
        for name, value in vars(pdp.errors).items()
        if isinstance(value, type) and issubclass(value, pdp.errors.PdpError)
    }
    assert drawn == defined - {"PdpError"}


@pytest.mark.parametrize(("category", "module", "name"), _drawn())
def test_each_leaf_is_under_its_category(category: str, module: str, name: str) -> None:
    leaf = getattr(importlib.import_module(module), name)
    assert issubclass(leaf, getattr(pdp.errors, category))


def test_every_error_raised_on_purpose_is_drawn() -> None:
    """A new PdpError subclass anywhere in pdp must be placed in the drawing (or be a category)."""
    import pkgutil

    import pdp

    for info in pkgutil.walk_packages(pdp.__path__, "pdp."):
        if not info.name.startswith("pdp._proto"):
            importlib.import_module(info.name)
    drawn = {(module, name) for _, module, name in _drawn()}
    undrawn = set()
    stack = [pdp.errors.PdpError]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__ != "pdp.errors" and not any(
                sub.__name__ == name and importlib.import_module(module).__dict__.get(name) is sub
                for module, name in drawn
            ):
                undrawn.add(f"{sub.__module__}.{sub.__qualname__}")
    assert not undrawn, f"add to the tree in pdp/errors.py: {sorted(undrawn)}"
