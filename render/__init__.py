"""splatfield.render — cameras, differentiable rasterization and compositing.

``rasterize`` renders 3D Gaussians; ``composite`` composites packed ray samples through
the same step. Both run on the native kernels (C++ on the CPU, CUDA on NVIDIA GPUs) and
fall back to the PyTorch reference in :mod:`splatfield.render.reference` when those
cannot be built.
"""

from .camera import CameraModel, Cameras, opengl_to_opencv_c2w
from .composite import alphas_from_densities, composite
from .gaussians import SH_C0, Gaussians
from .rasterize import Backend, rasterize, resolve_backend
from .types import STATISTICS, RenderMeta, RenderOutput, RenderStats, Statistic

__all__ = [
    "SH_C0",
    "STATISTICS",
    "Backend",
    "CameraModel",
    "Cameras",
    "Gaussians",
    "RenderMeta",
    "RenderOutput",
    "RenderStats",
    "Statistic",
    "alphas_from_densities",
    "composite",
    "opengl_to_opencv_c2w",
    "rasterize",
    "resolve_backend",
]
