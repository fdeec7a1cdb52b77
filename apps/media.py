"""Image and video files of rendered frames: uint8 pixels, PNGs (atomic), H.264 MP4."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from splatfield.scenes.checkpoint import atomic_write


def to_uint8(image: Tensor) -> np.ndarray:  # [H, W, 3] in [0, 1] -> uint8
    return (image.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda f: Image.fromarray(rgb).save(f, format="PNG"))


def write_video(path: Path, size: tuple[int, int], fps: float,
                produce: Callable[[Callable[[int, np.ndarray], None]], None]) -> int:  # fmt: skip
    """An H.264 MP4 (yuv420p, so every player opens it; odd sizes padded by one pixel) through
    the ffmpeg that imageio-ffmpeg ships; written to a temporary name, then renamed.
    ``produce(on_frame)`` calls ``on_frame(i, rgb)`` per frame; returns the frames written."""
    import imageio_ffmpeg

    W, H = size
    Wp, Hp = W + W % 2, H + H % 2
    tmp = path.with_name(f".{path.name}.partial.mp4")
    writer = imageio_ffmpeg.write_frames(str(tmp), (Wp, Hp), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         quality=8, macro_block_size=1, ffmpeg_log_level="error")  # fmt: skip
    writer.send(None)
    count = 0

    def on_frame(i: int, rgb: np.ndarray) -> None:
        nonlocal count
        if (Wp, Hp) != (W, H):
            rgb = np.pad(rgb, ((0, Hp - H), (0, Wp - W), (0, 0)), mode="edge")
        writer.send(np.ascontiguousarray(rgb))
        count += 1

    try:
        produce(on_frame)
    finally:
        writer.close()
    tmp.replace(path)
    return count
