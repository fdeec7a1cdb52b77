"""Builds and loads the native rasterizer: two extensions, each cached on disk.

* ``splatfield_cpu`` — the operator schemas and their CPU kernels (``cuda/ops.cpp``,
  ``cuda/cpu/*.cpp``), always built. If it fails, :func:`native_available` is False, the
  reason is :func:`native_error`, and rendering falls back to the PyTorch reference with
  one warning.
* ``splatfield_cuda`` — the CUDA kernels (``cuda/gpu/*.cu``), built on its own and loaded
  after the CPU one (its ``TORCH_LIBRARY_IMPL(splatfield, CUDA)`` attaches to the CPU
  library's schemas), only where torch has CUDA and ``nvcc`` exists. If it fails, the CPU
  kernels stay native; one warning names the compiler's first error and the build log, and
  CUDA tensors use the reference.

Each build lives in ``<cache_root()>/ext/<cpu|cuda>-<hash>/``, the hash taken over torch,
the flags, its own sources and the headers, so a change to a ``.cu`` file never rebuilds
the CPU kernels. A failed build writes its whole output to ``build.log`` there.
:func:`build_status` says what happened to each (``splatfield doctor`` prints it).

Forced modes, to exercise the failure paths on a machine without a GPU:

* ``SPLATFIELD_CUDA_BUILD=compile-only`` runs the CUDA build even with a CPU torch, as an
  ``nvcc -c`` pass over the ``.cu`` sources with the real flags and include paths
  (:func:`nvcc_flags`); it links and loads nothing, and its success or failure is recorded
  like a real build's.
* ``SPLATFIELD_PLANT_BAD_SOURCE=cpu|cuda`` adds a generated source with a syntax error to
  that build (first, so the build fails early), which must then fail.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from splatfield.cuda import INCLUDE_DIR, SOURCE_DIR, cpu_sources, cuda_sources, header_files

CPU_FLAGS = ["-O3", "-fopenmp", "-march=native", "-ffp-contract=off"]
# Alpha decisions in the forward and backward passes must agree bit for bit, so no
# floating-point contraction that could differ between the two inlined copies.
NVCC_FLAGS = ["-O3", "--fmad=false", "--expt-relaxed-constexpr"]
# What a compile-only pass targets when neither TORCH_CUDA_ARCH_LIST nor a device says.
COMPILE_ONLY_ARCH = "9.0"


@dataclass
class Build:
    """What happened to one extension in this process."""

    state: str = "not attempted"  # built | compiled (compile-only: nothing loaded) | failed | not attempted
    reason: str | None = None  # why it failed (the compiler's first error) or was not attempted
    cache_dir: Path | None = None
    log: Path | None = None  # the whole output of a failed build


_lock = threading.RLock()  # the CUDA build loads the CPU one first, under the same lock
_builds: dict[str, Build] = {}
_warned: set[str] = set()


def cache_root() -> Path:
    root = os.environ.get("SPLATFIELD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "splatfield"
    )
    return Path(root)


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    return None


def cuda_mode() -> str:
    """``build`` (where torch has CUDA) or ``compile-only`` (SPLATFIELD_CUDA_BUILD)."""
    return "compile-only" if os.environ.get("SPLATFIELD_CUDA_BUILD") == "compile-only" else "build"


def cuda_arch_list() -> list[str]:
    """The GPU architectures a CUDA build targets, as torch.utils.cpp_extension picks them:
    TORCH_CUDA_ARCH_LIST, else the visible devices' compute capabilities, else (a
    compile-only pass without a device) COMPILE_ONLY_ARCH."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(",", ";").replace(" ", ";")
    if env and env != "native":
        return [a for a in env.split(";") if a]
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    found = [f"{major}.{minor}" for major, minor in sorted(caps)]
    return found or ([COMPILE_ONLY_ARCH] if cuda_mode() == "compile-only" else [])


def nvcc_flags(arch_list: list[str] | None = None) -> list[str]:
    """The nvcc flags of the CUDA build for a compile-only pass: NVCC_FLAGS plus what
    torch.utils.cpp_extension adds, the arch flags and the include paths."""
    from torch.utils import cpp_extension

    flags = list(NVCC_FLAGS)
    flags += [f for f in getattr(cpp_extension, "COMMON_NVCC_FLAGS", []) if f not in flags]
    if not any(f.startswith("-std=") for f in flags):
        flags.append("-std=c++20")  # what cpp_extension adds when no standard is given
    for arch in arch_list or cuda_arch_list() or [COMPILE_ONLY_ARCH]:
        num = arch.removesuffix("+PTX").replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    flags += [
        "-DTORCH_EXTENSION_NAME=splatfield_cuda",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-Xcompiler",
        "-fPIC",
    ]
    torch_includes = cpp_extension.include_paths()
    # A CPU-only torch wheel ships the c10/cuda headers without their generated config
    # header (it only defines a Windows export macro); tell CUDAMacros.h to do without it.
    if not any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").is_file() for p in torch_includes):
        flags.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    return flags + [f"-I{inc}" for inc in [str(INCLUDE_DIR), str(SOURCE_DIR), *torch_includes]]


def _planted(kind: str) -> list[Path]:
    """SPLATFIELD_PLANT_BAD_SOURCE: a source that cannot compile, for the failure tests."""
    if os.environ.get("SPLATFIELD_PLANT_BAD_SOURCE") != kind:
        return []
    path = cache_root() / "planted" / f"planted_syntax_error.{'cpp' if kind == 'cpu' else 'cu'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("// planted by SPLATFIELD_PLANT_BAD_SOURCE: this build must fail\nthis is not C++;\n")
    return [path]


def _build_dir(kind: str, sources: list[Path], settings: object) -> Path:
    h = hashlib.sha256(repr((torch.__version__, torch.version.cuda, settings)).encode())
    for path in sources + header_files(kind):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    path = cache_root() / "ext" / f"{kind}-{h.hexdigest()[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ensure_ninja_on_path() -> None:
    # `pip install ninja` puts the binary beside the interpreter, which is not on PATH
    # when the virtual environment is used without being activated.
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def _attempt(build: Build, work: Callable[[], str]) -> Build:
    """Runs a build step; any failure is recorded (one line, and the whole text in build.log)."""
    try:
        build.state = work()
    except Exception as exc:  # any build or load failure means: not native
        build.state, build.reason = "failed", _one_line(exc)
        if build.cache_dir is not None:
            try:
                build.log = build.cache_dir / "build.log"
                build.log.write_text(f"{type(exc).__name__}: {exc}\n")
            except OSError:
                build.log = None
    return build


def _load_cpu(verbose: bool = False) -> Build:
    with _lock:
        if "cpu" not in _builds:
            build = _builds["cpu"] = Build()

            def work() -> str:
                from torch.utils import cpp_extension

                sources = _planted("cpu") + cpu_sources()
                build.cache_dir = _build_dir("cpu", sources, CPU_FLAGS)
                _ensure_ninja_on_path()
                cpp_extension.load(
                    name="splatfield_cpu",
                    sources=[str(s) for s in sources],
                    extra_include_paths=[str(INCLUDE_DIR), str(SOURCE_DIR)],
                    extra_cflags=CPU_FLAGS,
                    extra_ldflags=["-fopenmp"],
                    build_directory=str(build.cache_dir),
                    is_python_module=False,
                    with_cuda=False,
                    verbose=verbose,
                )
                return "built"

            _attempt(build, work)
        return _builds["cpu"]


def _cuda_skipped() -> str | None:
    """Why the CUDA extension is not attempted here (None: attempt it)."""
    if _load_cpu().state != "built":
        return "the CPU extension failed (the CUDA kernels register on its operators)"
    if cuda_mode() == "build":
        if torch.version.cuda is None:
            return f"torch {torch.__version__} has no CUDA"
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
    if find_nvcc() is None:
        return "nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)"
    return None


def _compile_only(build: Build, sources: list[Path]) -> str:
    """nvcc -c over the sources, stopping at the first failure; a success is remembered."""
    stamp = build.cache_dir / "compile-only.ok"
    if not stamp.is_file():
        nvcc, flags = find_nvcc(), nvcc_flags()
        for src in sources:
            cmd = [nvcc, *flags, "-c", str(src), "-o", str(build.cache_dir / f"{src.stem}.o")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"nvcc failed on {src.name} (exit {proc.returncode})\n$ {shlex.join(cmd)}\n"
                                   f"{proc.stdout}{proc.stderr}")  # fmt: skip
        stamp.touch()
    return "compiled"


def _load_cuda(verbose: bool = False) -> Build:
    with _lock:
        if "cuda" not in _builds:
            skipped = _cuda_skipped()
            build = _builds["cuda"] = Build(reason=skipped)
            if skipped is None:
                mode = cuda_mode()

                def work() -> str:
                    from torch.utils import cpp_extension

                    sources = _planted("cuda") + cuda_sources()
                    build.cache_dir = _build_dir("cuda", sources, (NVCC_FLAGS, cuda_arch_list(), mode))
                    if mode == "compile-only":
                        return _compile_only(build, sources)
                    _ensure_ninja_on_path()
                    cpp_extension.load(
                        name="splatfield_cuda",
                        sources=[str(s) for s in sources],
                        extra_include_paths=[str(INCLUDE_DIR), str(SOURCE_DIR)],
                        extra_cuda_cflags=NVCC_FLAGS,
                        build_directory=str(build.cache_dir),
                        is_python_module=False,
                        with_cuda=True,
                        verbose=verbose,
                    )
                    return "built"

                if _attempt(build, work).state == "failed":
                    _warn_once(_cuda_unavailable(build), f"splatfield: the CUDA extension failed to build: "
                               f"{build.reason}; full build log: {build.log}. The CPU kernels are native; CUDA "
                               f"tensors use the slower PyTorch reference")  # fmt: skip
        return _builds["cuda"]


def load(verbose: bool = False) -> bool:
    """Builds (if needed) and loads both extensions; returns whether the CPU one is usable."""
    _load_cpu(verbose)
    _load_cuda(verbose)
    return native_available()


def _one_line(exc: Exception) -> str:
    """The most telling line of a build failure: the compiler's first error if any."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return f"{type(exc).__name__}: {(errors or lines or ['no message'])[0]}"


def native_available() -> bool:
    """Whether the native CPU kernels are built and loaded."""
    return _load_cpu().state == "built"


def native_has_cuda() -> bool:
    """Whether the native CUDA kernels are built and loaded too."""
    return native_available() and _load_cuda().state == "built"


def native_error() -> str | None:
    """Why the CPU extension failed (None when it is built)."""
    return _load_cpu().reason


def _cuda_unavailable(build: Build) -> str:
    if build.state == "failed":
        return f"the CUDA extension failed to build: {build.reason} (log: {build.log})"
    if build.state == "compiled":
        return "the CUDA extension was only compile-checked (SPLATFIELD_CUDA_BUILD=compile-only)"
    return f"CUDA extension not built: {build.reason}"


def unavailable_reason(device: torch.device) -> str | None:
    """None when the native kernels run on ``device``; else why not, in one line."""
    if not native_available():
        return native_error()
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"no native kernels for device {device}"
    cuda = _load_cuda()
    return None if cuda.state == "built" else _cuda_unavailable(cuda)


KERNEL_GROUPS = {
    "gaussians": ("project_fwd", "project_bwd", "rasterize_fwd", "rasterize_bwd"),
    "field": ("composite_fwd", "composite_bwd", "grid_sample_fwd", "grid_sample_bwd", "march_rays", "field_render",
              "sparse_adam_"),
}


def kernel_groups() -> dict[str, list[str]]:
    """The native ops the loaded CPU extension registers, by what uses them (``doctor``)."""
    ops = torch.ops.splatfield
    return {group: [name for name in names if hasattr(ops, name)] for group, names in KERNEL_GROUPS.items()}


def build_status() -> dict[str, dict]:
    """Both builds (attempted first if they were not): per extension its state (built,
    compiled, failed, not attempted), reason, cache_dir and log; for cuda also its mode and
    the arch list it targets. Paths as strings, ready for JSON."""
    load()
    status = {kind: {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(_builds[kind]).items()}
              for kind in ("cpu", "cuda")}  # fmt: skip
    status["cuda"].update(mode=cuda_mode(), arch_list=cuda_arch_list())
    return status


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def warn_fallback_once(reason: str | None = None) -> None:
    """One warning per cause (default: the CPU build's error) that the reference is used.
    A failed CUDA build has already said so in its own warning."""
    reason = reason or native_error()
    _warn_once(str(reason), f"splatfield: native rasterizer unavailable ({reason}); "
               "using the slower PyTorch reference implementation")  # fmt: skip


def flush_denormals(enable: bool = True) -> None:
    """Flushes denormal floats to zero on this thread and on every thread of ATen's pool.

    Training drives tiny gradients (and Adam's squared moments) into the denormal range,
    where x86 arithmetic is ~100x slower; ``torch.set_flush_denormal`` alone reaches only
    the calling thread, so the native library sets the pool's threads too.
    """
    torch.set_flush_denormal(enable)
    if native_available():
        torch.ops.splatfield.set_flush_denormals(enable)
