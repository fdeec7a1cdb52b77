"""Line plots as PNGs, drawn with PIL alone (axes, ticks, grid, a legend, a title): the
commands' figures (``bench curve``: PSNR against training minutes; ``eval --ratios``: PSNR
against the kept fraction of Gaussians, on a log axis)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

# tab10's colours; with the markers' shapes, runs stay apart also in grey
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip
MARKERS = ("circle", "square", "triangle", "diamond")
INK = (33, 33, 33)
GRID = (225, 225, 225)
MIN_SIZE = (320, 240)


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float | None]  # None: not finite, left out
    line: bool = True  # False: points only


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def nice_step(span: float, target: int) -> float:
    """A tick spacing of 1, 2, 2.5 or 5 times a power of ten giving about ``target`` ticks."""
    raw = span / max(1, target)
    p = 10.0 ** math.floor(math.log10(raw))
    return next(m * p for m in (1, 2, 2.5, 5, 10) if m * p >= raw * (1 - 1e-9))


def ticks(lo: float, hi: float, target: int) -> tuple[float, float, list[float], float]:
    """(axis low, axis high, tick values, spacing): the axis widened to whole ticks."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    step = nice_step(hi - lo, target)
    a, b = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    n = round((b - a) / step)
    return a, b, [a + k * step for k in range(n + 1)], step


def tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:  # 2.5 x 10^k
        decimals += 1
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def log_ticks(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """(axis low, axis high, tick values) of a log axis: whole decades, with 2 and 5 times
    each when it spans at most three decades."""
    lo, hi = max(lo, 1e-300), max(hi, 1e-300)
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if b <= a:
        a, b = a - 1, a + 1 if hi > 10.0**a else a
    steps = (1, 2, 5) if b - a <= 3 else (1,)
    values = [m * 10.0**e for e in range(a, b) for m in steps] + [10.0**b]
    return 10.0**a, 10.0**b, values


def log_tick_label(value: float) -> str:
    return f"{value:.{max(0, -math.floor(math.log10(value) + 1e-9))}f}" if value < 1 else f"{value:g}"


def _size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int, int, int]:
    return draw.textbbox((0, 0), text, font=font)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, ha: str = "left", va: str = "top",
          fill=INK) -> None:  # fmt: skip
    """Text placed by its box: ha left/center/right, va top/middle/bottom (no anchors: bitmap fonts lack them)."""
    l, t, r, b = _size(draw, text, font)
    x = xy[0] - {"left": 0, "center": (r - l) / 2, "right": r - l}[ha] - l
    y = xy[1] - {"top": 0, "middle": (b - t) / 2, "bottom": b - t}[va] - t
    draw.text((x, y), text, font=font, fill=fill)


def _marker(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, color) -> None:
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color, outline="white")
    elif shape == "square":
        draw.rectangle((x - r * 0.9, y - r * 0.9, x + r * 0.9, y + r * 0.9), fill=color, outline="white")
    elif shape == "triangle":
        draw.polygon([(x, y - r * 1.2), (x + r * 1.1, y + r * 0.8), (x - r * 1.1, y + r * 0.8)], fill=color,
                     outline="white")  # fmt: skip
    else:
        draw.polygon([(x, y - r * 1.25), (x + r, y), (x, y + r * 1.25), (x - r, y)], fill=color, outline="white")


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def draw(series: Sequence[Series], *, title: str, x_label: str, y_label: str, size: tuple[int, int] = (900, 560),
         x_log: bool = False) -> Image.Image:  # fmt: skip
    """The series on one plot: a linear x axis from 0, or (``x_log``) a log one over the data."""
    W, H = size
    s = max(0.6, min(2.0, min(W / 900, H / 560)))  # scale of fonts, margins, lines
    f_title, f_label, f_tick = _font(round(19 * s)), _font(round(15 * s)), _font(round(13 * s))
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)

    xs = [x for c in series for x, y in zip(c.x, c.y) if y is not None and (x > 0 or not x_log)]
    ys = [y for c in series for x, y in zip(c.x, c.y) if y is not None and (x > 0 or not x_log)]
    if x_log:
        x0, x1, xt = log_ticks(min(xs, default=0.1), max(xs, default=1.0))
        x_text = [log_tick_label(v) for v in xt]
        fx = math.log10
    else:
        x0, x1, xt, xstep = ticks(0.0, max(xs, default=1.0), max(3, round(W / 130)))
        x_text = [tick_label(v, xstep) for v in xt]
        fx = float
    pad = 0.05 * (max(ys) - min(ys)) if ys else 0.0
    y0, y1, yt, ystep = ticks(min(ys, default=0.0) - pad, max(ys, default=40.0) + pad, max(3, round(H / 90)))
    y_tick_w = max(_size(draw, tick_label(v, ystep), f_tick)[2] for v in yt)
    label_h = _size(draw, y_label, f_label)[3]

    left = round(14 * s + label_h + 10 * s + y_tick_w + 8 * s)
    right = W - round(28 * s)
    top = round(22 * s + _size(draw, title, f_title)[3] + 16 * s)
    bottom = H - round(8 * s + _size(draw, "0", f_tick)[3] + 14 * s + label_h + 14 * s)

    def px(x: float, y: float) -> tuple[float, float]:
        u = (fx(x) - fx(x0)) / (fx(x1) - fx(x0))
        return left + u * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    # grid, ticks, tick labels
    tick = round(5 * s)
    for v, text in zip(xt, x_text):
        x, _ = px(v, y0)
        draw.line([(x, top), (x, bottom)], fill=GRID, width=1)
        draw.line([(x, bottom), (x, bottom + tick)], fill=INK, width=1)
        _text(draw, (x, bottom + tick + 3 * s), text, f_tick, ha="center")
    for v in yt:
        _, y = px(x0, v)
        draw.line([(left, y), (right, y)], fill=GRID, width=1)
        draw.line([(left - tick, y), (left, y)], fill=INK, width=1)
        _text(draw, (left - tick - 3 * s, y), tick_label(v, ystep), f_tick, ha="right", va="middle")
    draw.rectangle((left, top, right, bottom), outline=INK, width=1)

    # title and axis labels (the y label rotated)
    _text(draw, (W / 2, 18 * s), title, f_title, ha="center")
    _text(draw, ((left + right) / 2, H - 12 * s), x_label, f_label, ha="center", va="bottom")
    l, t, r, b = _size(draw, y_label, f_label)
    rot = Image.new("L", (r - l + 4, b - t + 4), 0)
    ImageDraw.Draw(rot).text((2 - l, 2 - t), y_label, font=f_label, fill=255)
    rot = rot.rotate(90, expand=True)
    img.paste(Image.new("RGB", rot.size, INK), (round(12 * s), round((top + bottom - rot.size[1]) / 2)), rot)

    # the curves
    lw, mr = max(1, round(2.2 * s)), 4.2 * s
    pixels: list[tuple[float, float]] = []
    for k, c in enumerate(series):
        color, shape = PALETTE[k % len(PALETTE)], MARKERS[k % len(MARKERS)]
        pts = sorted(px(x, y) for x, y in zip(c.x, c.y) if y is not None and (x > 0 or not x_log))
        pixels += pts
        if c.line and len(pts) > 1:
            draw.line(pts, fill=color, width=lw, joint="curve")
        for x, y in pts:
            _marker(draw, shape, x, y, mr, color)

    # the legend, in the corner of the plot that covers the fewest points
    if series:
        labels = [_short(c.label) + ("" if any(y is not None for y in c.y) else " (no point)") for c in series]
        row = max(_size(draw, "Ag", f_label)[3], round(2 * mr)) + round(8 * s)
        sample = round(34 * s)
        w = round(12 * s + sample + 8 * s + max(_size(draw, t_, f_label)[2] for t_ in labels) + 12 * s)
        h = round(8 * s + row * len(labels) + 2 * s)
        m = round(10 * s)
        x_r, y_b = right - m - w, bottom - m - h
        corners = [(x_r, y_b), (left + m, top + m), (x_r, top + m), (left + m, y_b)]

        def covered(corner: tuple[float, float]) -> int:
            cx, cy = corner
            return sum(cx - mr <= x <= cx + w + mr and cy - mr <= y <= cy + h + mr for x, y in pixels)

        lx, ly = min(corners, key=covered)
        draw.rectangle((lx, ly, lx + w, ly + h), fill="white", outline=(170, 170, 170), width=1)
        for k, text in enumerate(labels):
            color, shape = PALETTE[k % len(PALETTE)], MARKERS[k % len(MARKERS)]
            cy = ly + 5 * s + row * k + row / 2
            x_a, x_b = lx + 12 * s, lx + 12 * s + sample
            if series[k].line:
                draw.line([(x_a, cy), (x_b, cy)], fill=color, width=lw)
            _marker(draw, shape, (x_a + x_b) / 2, cy, mr, color)
            _text(draw, (x_b + 8 * s, cy), text, f_label, va="middle")
    return img


def save(path: Path, img: Image.Image) -> None:
    """A plot as a PNG at ``path`` (atomically)."""
    from splatfield.scenes.checkpoint import atomic_write

    atomic_write(Path(path), lambda f: img.save(f, format="PNG"))
