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
