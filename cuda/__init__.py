"""Native sources of splatfield's rasterizer (C++ for the CPU, CUDA for NVIDIA GPUs).

They are compiled on first use by :mod:`splatfield.render._ext` as two extensions: the CPU
one (``ops.cpp`` with the operator schemas, ``cpu/``) and the CUDA one (``gpu/``); this
package only ships them and says where they are.
"""

from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
INCLUDE_DIR = SOURCE_DIR / "include"


def cpu_sources() -> list[Path]:
    return [SOURCE_DIR / "ops.cpp", *sorted((SOURCE_DIR / "cpu").glob("*.cpp"))]


def cuda_sources() -> list[Path]:
    return sorted((SOURCE_DIR / "gpu").glob("*.cu"))


def header_files(kind: str | None = None) -> list[Path]:
    """Every header a source of ``kind`` (cpu, cuda; default both) may include: what,
    besides the sources, keys a build."""
    shared = sorted(INCLUDE_DIR.rglob("*.h")) + sorted(SOURCE_DIR.glob("*.h"))
    cpu = sorted((SOURCE_DIR / "cpu").glob("*.h"))
    gpu = sorted((SOURCE_DIR / "gpu").glob("*.cuh")) + sorted((SOURCE_DIR / "gpu").glob("*.h"))
    return shared + (cpu if kind != "cuda" else []) + (gpu if kind != "cpu" else [])
