"""When a native extension cannot be built, `auto` falls back to the reference with one
warning that names the cause; `native` refuses with that cause. A failed or missing CUDA
build names its own cause on CUDA tensors and leaves the CPU kernels native."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from splatfield.render import Cameras, Gaussians, _ext, rasterize
from splatfield.render.rasterize import resolve_backend

from .scenes import closed_form_image

MEANS = [[0.0, 0.0, 3.0], [0.2, 0.1, 4.0]]
SCALE, OPACITIES, RGB = 0.1, [0.8, 0.6], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
FX = FY = 30.0
CX, CY, W, H = 10.0, 8.0, 20, 16


@pytest.fixture
def broken_build(monkeypatch):
    failed = _ext.Build(state="failed", reason="CalledProcessError: g++: error: no such compiler")
    monkeypatch.setattr(_ext, "_builds", {"cpu": failed})
    monkeypatch.setattr(_ext, "_warned", set())


def _scene():
    g = Gaussians.from_rgb(
        torch.tensor(MEANS),
        torch.full((2, 3), SCALE),
        torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0]]),  # isotropic: the rotation does not matter
        torch.tensor(OPACITIES),
        torch.tensor(RGB),
    )
    return g, Cameras.from_intrinsics(torch.eye(4), FX, FY, CX, CY, W, H)


def _runtime_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_auto_falls_back_with_one_warning_naming_the_cause(broken_build):
    g, cams = _scene()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = rasterize(g, cams)
        rasterize(g, cams)
    messages = _runtime_warnings(caught)
    assert len(messages) == 1
    assert "no such compiler" in messages[0] and "reference" in messages[0]
    # the fallback renders the scene correctly: against the closed form, not against itself
    expected = closed_form_image(MEANS, [SCALE] * 2, OPACITIES, RGB, FX, FY, CX, CY, W, H)
    assert out.alpha.max() > 0.5  # the Gaussians are in view and opaque enough to test something
    torch.testing.assert_close(out.image[0].double(), torch.from_numpy(expected), rtol=0, atol=1e-5)


def test_native_backend_refuses_with_the_cause(broken_build):
    g, cams = _scene()
    with pytest.raises(RuntimeError, match="no such compiler"):
        rasterize(g, cams, backend="native")


@pytest.mark.parametrize(
    "cuda, cause",
    [
        (_ext.Build(reason="nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)"),
         "CUDA extension not built: nvcc not found"),
        (_ext.Build(reason="torch 2.13.0+cpu has no CUDA"), "CUDA extension not built: torch 2.13.0+cpu has no CUDA"),
        (_ext.Build(state="failed", reason="RuntimeError: x.cu(2): error: bad", log=Path("/c/build.log")),
         "the CUDA extension failed to build: RuntimeError: x.cu(2): error: bad (log: /c/build.log)"),
    ],
    ids=["no-nvcc", "cpu-torch", "build-failed"],
)
def test_cuda_tensors_fall_back_naming_the_cuda_cause(native, monkeypatch, cuda, cause):
    monkeypatch.setitem(_ext._builds, "cuda", cuda)
    monkeypatch.setattr(_ext, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("auto", torch.device("cuda")) == "reference"
        assert resolve_backend("auto", torch.device("cuda")) == "reference"
        assert resolve_backend("auto", torch.device("cpu")) == "native"  # the CPU kernels are unaffected
    messages = _runtime_warnings(caught)
    assert len(messages) == 1 and cause in messages[0] and "None" not in messages[0], messages
    with pytest.raises(RuntimeError, match="native rasterizer unavailable: " + cause.split(":")[0]):
        resolve_backend("native", torch.device("cuda"))


def test_build_errors_are_reduced_to_the_compiler_line():
    exc = RuntimeError("Error building extension 'x':\n[1/2] c++ -c a.cpp\nFAILED: a.o\na.cpp:3:1: error: expected ';'\nninja: build stopped")
    assert _ext._one_line(exc) == "RuntimeError: a.cpp:3:1: error: expected ';'"
