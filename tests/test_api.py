"""The public surface: every exported name exists, is documented, and is importable cheaply."""

import importlib.util
import inspect

import pytest

import subnet


@pytest.mark.parametrize("name", subnet.__all__)
def test_every_public_name_exists_and_has_a_docstring(name):
    obj = getattr(subnet, name)
    doc = inspect.getdoc(obj)
    assert doc and len(doc) > 20, f"subnet.{name} needs a docstring"


@pytest.mark.parametrize("name", [n for n in subnet.__all__
                                  if inspect.isfunction(getattr(subnet, n))])
def test_public_functions_document_their_arguments(name):
    func = getattr(subnet, name)
    doc = inspect.getdoc(func)
    params = [p for p in inspect.signature(func).parameters if p not in ("self", "args", "kwargs")]
    if params:
        assert "Args:" in doc, f"subnet.{name} documents no arguments"
        for param in params:
            assert param in doc, f"subnet.{name} does not document `{param}`"
    assert "Returns:" in doc or "Yields:" in doc, f"subnet.{name} documents no return value"


def test_all_is_sorted_and_unique():
    assert list(subnet.__all__) == sorted(set(subnet.__all__))


def test_version():
    assert subnet.__version__.count(".") == 2


def test_public_functions_are_not_shadowed_by_modules():
    """A submodule named like a public function would replace it once imported."""
    for name in subnet.__all__:
        assert importlib.util.find_spec(f"subnet.{name}") is None, name
    importlib.import_module("subnet.comparison")
    importlib.import_module("subnet.extraction")
    assert callable(subnet.compare) and callable(subnet.extract)
