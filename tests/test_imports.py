"""Every module of the package imports (a name moved between layers cannot hide in a module no test loads)."""

import importlib
import pkgutil

import pytest

import legato

MODULES = sorted(m.name for m in pkgutil.walk_packages(legato.__path__, "legato.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    assert importlib.import_module(name).__name__ == name
