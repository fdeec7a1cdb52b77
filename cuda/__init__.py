"""Native sources of splatfield's rasterizer (C++ for the CPU, CUDA for NVIDIA GPUs).

The files are compiled on first use by :mod:`splatfield.render._ext`; this package only
ships them and says where they are.
"""

from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
INCLUDE_DIR = SOURCE_DIR / "include"


def cpu_sources() -> list[Path]:
    return [SOURCE_DIR / "ops.cpp", *sorted((SOURCE_DIR / "cpu").glob("*.cpp"))]


def cuda_sources() -> list[Path]:
    return sorted((SOURCE_DIR / "gpu").glob("*.cu"))


def header_files() -> list[Path]:
    """Every header a source may include: what, besides the sources, keys a build."""
    gpu = SOURCE_DIR / "gpu"
    return sorted(INCLUDE_DIR.rglob("*.h")) + sorted(SOURCE_DIR.glob("*.h")) + sorted(
        (SOURCE_DIR / "cpu").glob("*.h")
    ) + sorted(gpu.glob("*.cuh")) + sorted(gpu.glob("*.h"))
