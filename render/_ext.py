"""Builds and loads the native rasterizer once per process (cached on disk).

The extension is compiled with ``torch.utils.cpp_extension`` and ninja into a cache
folder keyed by the torch version and the sources, so a machine compiles it once. CUDA
sources join the build only where torch has CUDA and ``nvcc`` is present. When no
compiler works, :func:`native_available` is False, the reason is kept in
:func:`native_error`, and the renderer falls back to the reference implementation with a
single warning.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch

from splatfield.cuda import INCLUDE_DIR, SOURCE_DIR, cpu_sources, cuda_sources, header_files

_lock = threading.Lock()
_state: dict[str, object] = {}

CPU_FLAGS = ["-O3", "-fopenmp", "-march=native", "-ffp-contract=off"]
# Alpha decisions in the forward and backward passes must agree bit for bit, so no
# floating-point contraction that could differ between the two inlined copies.
NVCC_FLAGS = ["-O3", "--fmad=false", "--expt-relaxed-constexpr"]


def cache_root() -> Path:
    root = os.environ.get("SPLATFIELD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "splatfield"
    )
    return Path(root)


def _with_cuda() -> bool:
    return torch.cuda.is_available() and shutil.which("nvcc") is not None


def _build_dir(sources: list[Path], with_cuda: bool) -> Path:
    h = hashlib.sha256()
    h.update(torch.__version__.encode())
    h.update(repr((CPU_FLAGS, NVCC_FLAGS, with_cuda)).encode())
    for path in sorted(sources) + header_files():
        h.update(path.read_bytes())
    path = cache_root() / "ext" / h.hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ensure_ninja_on_path() -> None:
    # `pip install ninja` puts the binary beside the interpreter, which is not on PATH
    # when the virtual environment is used without being activated.
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def load(verbose: bool = False) -> bool:
    """Builds (if needed) and loads the extension; returns whether it is usable."""
    with _lock:
        if "ok" in _state:
            return bool(_state["ok"])
        try:
            from torch.utils import cpp_extension

            _ensure_ninja_on_path()
            with_cuda = _with_cuda()
            sources = cpu_sources() + (cuda_sources() if with_cuda else [])
            cpp_extension.load(
                name="splatfield_native",
                sources=[str(s) for s in sources],
                extra_include_paths=[str(INCLUDE_DIR), str(SOURCE_DIR)],
                extra_cflags=CPU_FLAGS,
                extra_cuda_cflags=NVCC_FLAGS,
                extra_ldflags=["-fopenmp"],
                build_directory=str(_build_dir(sources, with_cuda)),
                is_python_module=False,
                verbose=verbose,
            )
            _state["ok"] = True
            _state["cuda"] = with_cuda
        except Exception as exc:  # any build or load failure means: use the reference
            _state["ok"] = False
            _state["error"] = _one_line(exc)
        return bool(_state["ok"])


def _one_line(exc: Exception) -> str:
    """The most telling line of a build failure: the compiler's first error if any."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return f"{type(exc).__name__}: {(errors or lines or ['no message'])[0]}"


def native_available() -> bool:
    return load()


def native_has_cuda() -> bool:
    return load() and bool(_state.get("cuda"))


def native_error() -> str | None:
    load()
    return _state.get("error")  # type: ignore[return-value]


_warned = False


def warn_fallback_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"splatfield: native rasterizer unavailable ({native_error()}); "
            "using the slower PyTorch reference implementation",
            RuntimeWarning,
            stacklevel=3,
        )


def flush_denormals(enable: bool = True) -> None:
    """Flushes denormal floats to zero on this thread and on every thread of ATen's pool.

    Training drives tiny gradients (and Adam's squared moments) into the denormal range,
    where x86 arithmetic is ~100x slower; ``torch.set_flush_denormal`` alone reaches only
    the calling thread, so the native library sets the pool's threads too.
    """
    torch.set_flush_denormal(enable)
    if native_available():
        torch.ops.splatfield.set_flush_denormals(enable)
