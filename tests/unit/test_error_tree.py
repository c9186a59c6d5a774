"""One error tree (issue 11): every exception class the project defines derives from ``BusError``, and
the tree drawn in ``bus/errors.py`` names every class of that module."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import bus.errors
from bus.errors import BusError

PACKAGES = ("bus", "adapters", "entrypoints", "mock_axis")


def _modules() -> list[ModuleType]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            found.append(importlib.import_module(info.name))
    return found


def test_every_exception_the_project_defines_is_a_bus_error() -> None:
    defined = {
        f"{module.__name__}.{name}": value
        for module in _modules()
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
    }
    assert len(defined) > 30  # the walk found the project's errors, not nothing
    outside = sorted(name for name, cls in defined.items() if not issubclass(cls, BusError))
    assert outside == [], f"derive these from BusError: {outside}"


def test_the_drawn_tree_names_every_class_of_bus_errors() -> None:
    drawing = bus.errors.__doc__ or ""
    classes = [
        name
        for name, value in vars(bus.errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == "bus.errors"
    ]
    missing = [name for name in classes if name not in drawing]
    assert classes
    assert missing == [], f"add these to the tree in bus/errors.py's docstring: {missing}"
