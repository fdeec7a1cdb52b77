"""Which image pairs SfM matches: a choice that scales with the number of images.

- ``exhaustive``: every pair, N(N-1)/2. The most robust, and what ``auto`` picks for photos
  up to :data:`EXHAUSTIVE_MAX` images; past that its cost grows with N² (292 photos: 42,486
  pairs), mostly in the geometric verification of pairs that share nothing (RANSAC runs
  toward its trial limit on their chance matches).
- ``sequential``: each image with those 1, 2, 4, 8, ... 512 ahead in name order (COLMAP's
  sequential pairing with its default quadratic overlap); a video's frames.
- ``retrieval``: each image with its :data:`RETRIEVAL_NEIGHBOURS` most similar images by a
  global descriptor (about N·k pairs), plus the next :data:`NUMBERED_OVERLAP` in name order
  when the names are in capture order: numbered (IMG_0001.jpg, ...) and most images among
  the most similar of the one before (random or renamed numbers are not an order). The
  descriptor is a bag of visual words of the capture's own SIFT descriptors: a codebook of
  :data:`WORDS` words learnt by k-means on a sample of them, each image a histogram of its
  words (square-rooted, so a repeated pattern does not dominate, and weighted by inverse
  document frequency), compared by cosine similarity. COLMAP's vocabulary tree does the
  same with a tree trained on other photos, but it needs a downloaded tree file that
  pycolmap does not ship.

Pairs are (i, j) with i < j, indices into the images in name order. numpy only.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable, Iterable, Literal, Sequence

import numpy as np

Matcher = Literal["exhaustive", "sequential", "retrieval"]
Pair = tuple[int, int]

EXHAUSTIVE_MAX = 100
"""``auto`` matches every pair of up to this many photos: at most 4,950 pairs, 16 min on one
core at 512 px, minutes that buy exhaustive's robustness; 300 photos would take 2 hours
(docs/BENCHMARKS.md, "SfM on large folders")."""
RETRIEVAL_NEIGHBOURS = 20
"""Most similar images matched with each image (``retrieval``)."""
SEQUENTIAL_OVERLAP = 10
"""Powers of two ahead matched with each image (``sequential``; COLMAP's default)."""
NUMBERED_OVERLAP = 5
"""Following images matched with each one by ``retrieval`` when the names are in capture order."""
WORDS = 2048
"""Visual words in the codebook (``retrieval``)."""
KMEANS_ITERATIONS = 12
_SAMPLE = 80_000  # descriptors the codebook is learnt from (at most 256 an image)
_MAX_PER_IMAGE = 2048  # descriptors per image that are counted (evenly spread)
_BLOCK = 50  # images per block of exhaustive pairs (COLMAP's block size): a chunk touches few images


def exhaustive_pairs(n: int, block: int = _BLOCK) -> list[Pair]:
    """Every pair of ``n`` images, block by block (so that consecutive pairs share images)."""
    pairs = []
    starts = range(0, n, block)
    for a in starts:
        for b in starts:
            if b < a:
                continue
            for i in range(a, min(a + block, n)):
                for j in range(max(b, i + 1), min(b + block, n)):
                    pairs.append((i, j))
    return pairs


def sequential_pairs(n: int, overlap: int = SEQUENTIAL_OVERLAP, quadratic: bool = True) -> list[Pair]:
    """Each image with the next ``overlap`` ones or, ``quadratic``, with those 2^q ahead
    (q < overlap): COLMAP's sequential pairing (its SequentialPairGenerator, pycolmap 4.2)."""
    steps = [2**q for q in range(overlap)] if quadratic else list(range(1, overlap + 1))
    return [(i, i + s) for i in range(n) for s in steps if i + s < n]


def numbered(names: Sequence[str]) -> bool:
    """Whether the names are one template with a running number (IMG_0001.jpg, DSC01234.JPG),
    a hint that by name they are in capture order (:func:`in_capture_order` checks it). 90%
    of the names must share the template."""
    if len(names) < 2:
        return False
    templates = Counter(re.sub(r"\d+", "#", n) for n in names)
    template, count = templates.most_common(1)[0]
    return "#" in template and count >= 0.9 * len(names)


# ----------------------------------------------------------------------------- global descriptor


def _as_unit_rows(x: np.ndarray) -> np.ndarray:  # [M, D] -> float32 rows of unit length
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _spread(x: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` rows of ``x``, evenly spread (deterministic)."""
    if len(x) <= count:
        return x
    return x[np.linspace(0, len(x) - 1, count).round().astype(np.int64)]


def nearest_word(x: np.ndarray, codebook: np.ndarray, chunk: int = 4096) -> np.ndarray:  # [M, D], [K, D] -> [M]
    """Index of the nearest codebook row of each row of ``x`` (Euclidean)."""
    c2 = (codebook * codebook).sum(1)
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), chunk):
        out[s : s + chunk] = np.argmin(c2[None, :] - 2.0 * (x[s : s + chunk] @ codebook.T), axis=1)
    return out


def kmeans(x: np.ndarray, k: int, iters: int = KMEANS_ITERATIONS, seed: int = 0,  # [M, D] -> [k, D]
           on_iteration: Callable[[int], None] = lambda n: None) -> np.ndarray:  # fmt: skip
    """Lloyd's k-means from ``k`` distinct rows drawn with ``seed``; an empty cluster keeps
    its centre. ``on_iteration(1)`` after each iteration."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters if k else 0):  # no descriptors at all: no words
        on_iteration(1)
        assign = nearest_word(x, centres)
        order = np.argsort(assign, kind="stable")
        counts = np.bincount(assign, minlength=k)
        used = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[used]
        centres[used] = np.add.reduceat(x[order], starts, axis=0) / counts[used, None]
    return centres


def codebook_sample(descriptors: np.ndarray, images: int) -> np.ndarray:  # [n, 128] -> [m, 128] unit rows
    """The share of one image's SIFT descriptors that the codebook is learnt from."""
    return _as_unit_rows(_spread(descriptors, max(16, min(256, _SAMPLE // max(1, images)))))


def codebook(descriptors: Sequence[np.ndarray], words: int = WORDS, seed: int = 0) -> np.ndarray:
    """Visual words learnt from a sample of every image's SIFT descriptors ([n_i, 128] each)."""
    return kmeans(np.concatenate([codebook_sample(d, len(descriptors)) for d in descriptors]), words, seed=seed)


def word_counts(descriptors: np.ndarray, words: np.ndarray) -> np.ndarray:  # [n, 128], [K, 128] -> [K]
    """How often each visual word occurs in one image (at most _MAX_PER_IMAGE descriptors)."""
    if len(descriptors) == 0:
        return np.zeros(len(words), dtype=np.float32)
    found = nearest_word(_as_unit_rows(_spread(descriptors, _MAX_PER_IMAGE)), words)
    return np.bincount(found, minlength=len(words)).astype(np.float32)


def global_descriptors(counts: np.ndarray) -> np.ndarray:  # [N, K] word counts -> [N, K] unit rows
    """Square-rooted counts weighted by inverse document frequency, unit length."""
    df = (counts > 0).sum(0)
    idf = np.log((1.0 + len(counts)) / (1.0 + df)).astype(np.float32)
    return _as_unit_rows(np.sqrt(counts) * idf[None, :])


# ----------------------------------------------------------------------------- pairs from similarity


def nearest_pairs(vectors: np.ndarray, k: int, chunk: int = 1024) -> set[Pair]:  # [N, D] unit rows
    """Each image with its ``k`` most similar others (cosine), as i < j pairs: at most N·k."""
    n = len(vectors)
    k = min(k, n - 1)
    pairs: set[Pair] = set()
    if k <= 0:
        return pairs
    for s in range(0, n, chunk):
        sim = vectors[s : s + chunk] @ vectors.T
        rows = np.arange(sim.shape[0])
        sim[rows, rows + s] = -np.inf  # never an image with itself
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        for r, cols in enumerate(top):
            i = s + r
            pairs.update((min(i, int(j)), max(i, int(j))) for j in cols)
    return pairs


def retrieval_pairs(vectors: np.ndarray, names: Sequence[str],  # [N, D] unit rows, N names
                    k: int = RETRIEVAL_NEIGHBOURS) -> tuple[list[Pair], bool]:  # fmt: skip
    """(pairs, in capture order): the ``k`` nearest neighbours of each image, sorted, and the
    next :data:`NUMBERED_OVERLAP` images too when :func:`in_capture_order`."""
    pairs = nearest_pairs(vectors, k)
    ordered = in_capture_order(names, pairs)
    if ordered:
        pairs.update(sequential_pairs(len(vectors), NUMBERED_OVERLAP, quadratic=False))
    return sorted(pairs), ordered


def in_capture_order(names: Sequence[str], similar: set[Pair]) -> bool:
    """Numbered names, and at least half of the images among the most similar of the one
    before them (``similar``: nearest-neighbour pairs)."""
    follow = sum((i, i + 1) in similar for i in range(len(names) - 1))
    return numbered(names) and follow >= 0.5 * (len(names) - 1)


# ----------------------------------------------------------------------------- the choice


def choose_matcher(requested: str, kind: str, names: Sequence[str]) -> tuple[Matcher, str]:
    """(matcher, why) for ``requested`` (``auto`` or a matcher) and the input ``kind``."""
    n = len(names)
    if requested != "auto":
        return requested, "as asked"  # type: ignore[return-value]
    if kind == "video":
        return "sequential", "auto: a video's frames, in time order"
    if n <= EXHAUSTIVE_MAX:
        return "exhaustive", f"auto: {n} images, every pair up to {EXHAUSTIVE_MAX}"
    why = f"auto: {n} images, more than {EXHAUSTIVE_MAX}: each with its {RETRIEVAL_NEIGHBOURS} most similar"
    return "retrieval", why


def pair_count(matcher: Matcher, n: int) -> int | None:
    """Pairs the matcher makes for ``n`` images (None for retrieval: known once computed)."""
    if matcher == "exhaustive":
        return n * (n - 1) // 2
    if matcher == "sequential":
        return len(sequential_pairs(n))
    return None


def chunks(items: Sequence, parts: int, least: int) -> Iterable[Sequence]:
    """``items`` in about ``parts`` consecutive slices of at least ``least`` items (progress
    is reported between slices; each slice costs one call into COLMAP)."""
    size = max(least, math.ceil(len(items) / max(1, parts)))
    for s in range(0, len(items), size):
        yield items[s : s + size]
