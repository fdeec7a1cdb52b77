"""Frames of a video for SfM: about ``count`` of them, evenly spread, skipping blurry ones.

The video is decoded once with the ffmpeg that imageio-ffmpeg ships. Its frames are cut
into ``count`` consecutive windows of equal length and the sharpest frame of each window
is kept, sharpness being the variance of the Laplacian of the grey image (a motion-blurred
or defocused frame has weak second derivatives). Only the best frame of the current window
is held in memory, so a long 4K video costs no more than two frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import DatasetError

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def sharpness(rgb: np.ndarray) -> float:  # [H, W, 3] uint8
    """Variance of the 4-neighbour Laplacian of the grey image, on at most ~960 px (long side):
    enough to rank frames by blur, and cheap."""
    step = max(1, max(rgb.shape[:2]) // 960)
    g = rgb[::step, ::step].astype(np.float32).mean(axis=-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


@dataclass
class ExtractedFrames:
    paths: list[Path]
    frames_decoded: int
    seconds: float


def extract_frames(video: Path, out_dir: Path, count: int, *, quality: int = 95) -> ExtractedFrames:
    """Writes the sharpest frame of each of ``count`` windows as ``out_dir/frame_#####.jpg``
    (numbered by frame index, so names sort in time order for sequential matching)."""
    import imageio_ffmpeg

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        reader = imageio_ffmpeg.read_frames(str(video), pix_fmt="rgb24")
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as e:
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DatasetError(video, f"cannot read video ({why})") from None
    W, H = meta["size"]
    fps, duration = float(meta.get("fps") or 0), float(meta.get("duration") or 0)
    expected = max(1, round(fps * duration))  # an estimate: frames past it join the last window
    window = max(1.0, expected / max(1, count))
    paths: list[Path] = []
    best: tuple[float, int, np.ndarray] | None = None
    current = 0

    def flush() -> None:
        if best is not None:
            p = out_dir / f"frame_{best[1]:05d}.jpg"
            Image.fromarray(best[2]).save(p, quality=quality)
            paths.append(p)

    n = 0
    try:
        for raw in reader:
            frame = np.frombuffer(raw, dtype=np.uint8).reshape(H, W, 3)
            w = min(int(n / window), count - 1)
            if w != current:
                flush()
                best, current = None, w
            s = sharpness(frame)
            if best is None or s > best[0]:
                best = (s, n, frame.copy())
            n += 1
    except RuntimeError as e:
        if n == 0:
            raise DatasetError(video, f"cannot decode video ({str(e).strip().splitlines()[-1]})") from None
    finally:
        reader.close()
    flush()
    if n == 0:
        raise DatasetError(video, "the video has no frames")
    return ExtractedFrames(paths, n, time.perf_counter() - t0)
