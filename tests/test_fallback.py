"""When the native extension cannot be built, `auto` falls back to the reference with
one warning that names the cause; `native` refuses with that cause."""

from __future__ import annotations

import warnings

import pytest
import torch

from splatfield.render import Cameras, Gaussians, _ext, rasterize


@pytest.fixture
def broken_build(monkeypatch):
    monkeypatch.setattr(_ext, "_state", {"ok": False, "error": "CalledProcessError: g++: error: no such compiler"})
    monkeypatch.setattr(_ext, "_warned", False)


def _scene():
    g = Gaussians.from_rgb(
        torch.tensor([[0.0, 0.0, 3.0], [0.2, 0.1, 4.0]]),
        torch.full((2, 3), 0.1),
        torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0]]),
        torch.tensor([0.8, 0.6]),
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    )
    return g, Cameras.from_intrinsics(torch.eye(4), 30.0, 30.0, 10.0, 8.0, 20, 16)


def test_auto_falls_back_with_one_warning_naming_the_cause(broken_build):
    g, cams = _scene()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = rasterize(g, cams)
        rasterize(g, cams)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "no such compiler" in messages[0] and "reference" in messages[0]
    expected = rasterize(g, cams, backend="reference")
    torch.testing.assert_close(out.image, expected.image, rtol=0, atol=0)


def test_native_backend_refuses_with_the_cause(broken_build):
    g, cams = _scene()
    with pytest.raises(RuntimeError, match="no such compiler"):
        rasterize(g, cams, backend="native")


def test_build_errors_are_reduced_to_the_compiler_line():
    exc = RuntimeError("Error building extension 'x':\n[1/2] c++ -c a.cpp\nFAILED: a.o\na.cpp:3:1: error: expected ';'\nninja: build stopped")
    assert _ext._one_line(exc) == "RuntimeError: a.cpp:3:1: error: expected ';'"
