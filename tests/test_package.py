"""The top-level namespace: every advertised name resolves to the module's own object."""

import importlib

import pytest

import robustrank


@pytest.mark.parametrize("name", robustrank.__all__)
def test_public_names_resolve(name):
    obj = getattr(robustrank, name)
    module = robustrank._LAZY.get(name)
    if module is not None:
        assert obj is getattr(importlib.import_module(f"robustrank.{module}"), name)
    assert callable(obj)


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        robustrank.nope  # noqa: B018
