"""SfM on large folders: the candidate pairs (exhaustive, sequential, retrieval by a bag of
visual words), the rule that picks the matcher, and the progress every phase reports."""

from __future__ import annotations

import itertools
import math
import threading
import time

import numpy as np
import pytest
from PIL import Image

from splatfield.data import sfm_pairs as sp
from splatfield.data.sfm_inputs import image_files, prepare_images
from splatfield.data.sfm_progress import EtaLines, capped, counting_files, duration, progress_line, seconds_left

# ----------------------------------------------------------------------------- pairs


def test_exhaustive_pairs_are_every_pair_once_block_by_block():
    pairs = sp.exhaustive_pairs(11, block=4)
    assert len(pairs) == len(set(pairs)) == 55
    assert set(pairs) == set(itertools.combinations(range(11), 2))
    # block by block: the first 6 pairs stay within images 0-3
    assert all(j < 4 for _, j in pairs[:6])


def test_sequential_pairs_are_colmaps_quadratic_overlap():
    pairs = set(sp.sequential_pairs(40, overlap=10))
    assert {j for i, j in pairs if i == 0} == {1, 2, 4, 8, 16, 32}  # 2^q ahead
    assert {j for i, j in pairs if i == 30} == {31, 32, 34, 38}
    assert len(pairs) == sum(sum(1 for q in range(10) if i + 2**q < 40) for i in range(40))
    assert set(sp.sequential_pairs(5, overlap=2, quadratic=False)) == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4),
                                                                        (3, 4)}  # fmt: skip


def test_numbered_names_mean_capture_order():
    assert sp.numbered([f"IMG_{i:04d}.JPG" for i in range(1, 30)])
    assert sp.numbered([f"DSC{i:05d}.jpg" for i in range(20)] + ["cover.jpg"])  # 20 of 21 share the template
    assert not sp.numbered(["kitchen.jpg", "garden.jpg", "door.jpg"])
    assert not sp.numbered([f"IMG_{i}.jpg" for i in range(5)] + [f"other_{c}.jpg" for c in "abcde"])


def lettered(n: int) -> list[str]:
    """``n`` sorted names without digits: aa.jpg, ab.jpg, ..."""
    return [f"{chr(97 + i // 26)}{chr(97 + i % 26)}.jpg" for i in range(n)]


def ring_of_photos(n: int, landmarks: int = 600, seen: int = 40, seed: int = 0) -> list[np.ndarray]:
    """SIFT-like descriptors of ``n`` photos taken around a ring of ``landmarks`` points: photo
    i sees the ``seen`` landmarks in front of it (neighbours share most of them), each
    descriptor its landmark's plus noise, in a shuffled order."""
    rng = np.random.default_rng(seed)
    looks = rng.normal(size=(landmarks, 128)).astype(np.float32)
    out = []
    for i in range(n):
        centre = i * landmarks / n
        idx = (np.arange(seen) + int(centre) - seen // 2) % landmarks
        d = looks[idx] + 0.15 * rng.normal(size=(seen, 128)).astype(np.float32)
        out.append(d[rng.permutation(seen)])
    return out


def test_retrieval_pairs_hold_the_true_neighbours_and_grow_like_n_k():
    n, k = 120, 6
    desc = ring_of_photos(n)
    words = sp.codebook(desc, words=300)
    vectors = sp.global_descriptors(np.stack([sp.word_counts(d, words) for d in desc]))
    pairs, ordered = sp.retrieval_pairs(vectors, lettered(n), k)
    pairs = set(pairs)
    assert not ordered  # names without numbers
    ring = [(i, (i + s) % n) for i in range(n) for s in (1, 2)]  # the two nearest on each side
    found = sum((min(a, b), max(a, b)) in pairs for a, b in ring)
    assert found == len(ring)
    assert len(pairs) <= n * k < n * (n - 1) // 2 / 5
    # far-apart photos (a quarter of the ring) are never paired: they share no landmark
    assert not any(min(j - i, n - (j - i)) > n // 4 for i, j in pairs)


def test_retrieval_adds_the_next_images_only_for_numbered_names_in_capture_order():
    n = 40
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)  # photos around a ring, in name order
    rng = np.random.default_rng(1)
    ring = sp._as_unit_rows(np.stack([np.cos(angle), np.sin(angle)], 1) + 0.01 * rng.normal(size=(n, 2)))
    numbered = [f"IMG_{i:04d}.jpg" for i in range(n)]
    chain = {(i, i + s) for i in range(n) for s in range(1, sp.NUMBERED_OVERLAP + 1) if i + s < n}
    pairs, ordered = sp.retrieval_pairs(ring, numbered, k=2)
    assert ordered and chain <= set(pairs) and len(pairs) <= n * 2 + len(chain)
    # the same photos under names without numbers: no order to trust
    assert sp.retrieval_pairs(ring, lettered(n), k=2)[1] is False
    # numbered names that do not follow the photos (renamed at random): not an order either
    shuffled = ring[rng.permutation(n)]
    pairs, ordered = sp.retrieval_pairs(shuffled, numbered, k=2)
    assert not ordered and not chain <= set(pairs)


def test_nearest_pairs_count_is_linear_in_n():
    rng = np.random.default_rng(2)
    for n in (50, 400):
        pairs = sp.nearest_pairs(sp._as_unit_rows(rng.normal(size=(n, 32))), 10, chunk=64)
        assert n * 10 / 2 <= len(pairs) <= n * 10
        assert all(i < j for i, j in pairs)


def test_kmeans_converges_to_the_means_of_its_clusters_and_reports_iterations():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 8)).astype(np.float32) * 10
    x = np.concatenate([c + 0.3 * rng.normal(size=(50, 8)).astype(np.float32) for c in centres])
    ticks: list[int] = []
    got = sp.kmeans(x, 6, iters=20, on_iteration=ticks.append)
    assert ticks == [1] * 20
    assign = sp.nearest_word(x, got)
    for c in np.unique(assign):  # a fixed point of Lloyd's iteration
        assert np.allclose(got[c], x[assign == c].mean(0), atol=1e-4)

    def spread(words: np.ndarray) -> float:
        return float(((x - words[sp.nearest_word(x, words)]) ** 2).sum())

    assert spread(got) < 0.5 * spread(sp.kmeans(x, 6, iters=0))  # far tighter than the random start


# ----------------------------------------------------------------------------- the rule


def test_auto_picks_exhaustive_up_to_the_threshold_then_retrieval():
    names = [f"IMG_{i:04d}.jpg" for i in range(sp.EXHAUSTIVE_MAX + 1)]
    m, why = sp.choose_matcher("auto", "images", names[: sp.EXHAUSTIVE_MAX])
    assert m == "exhaustive" and f"{sp.EXHAUSTIVE_MAX} images" in why
    m, why = sp.choose_matcher("auto", "images", names)
    assert m == "retrieval" and f"{sp.EXHAUSTIVE_MAX + 1} images, more than {sp.EXHAUSTIVE_MAX}" in why
    assert sp.choose_matcher("auto", "video", names[:500] * 2)[0] == "sequential"
    assert sp.choose_matcher("exhaustive", "images", names) == ("exhaustive", "as asked")
    assert sp.pair_count("exhaustive", 300) == 44850 and sp.pair_count("retrieval", 300) is None


def test_pipeline_matcher_choices_include_retrieval():
    import typing

    from splatfield.apps import sfm_choices
    from splatfield.data import sfm

    assert "retrieval" in typing.get_args(sfm.SfmMatcher)
    assert typing.get_args(sfm_choices.SfmMatcherName) == typing.get_args(sfm.SfmMatcher)


def test_chunks_cover_the_items_in_order():
    items = list(range(1003))
    parts = list(sp.chunks(items, 50, least=40))
    assert [x for p in parts for x in p] == items
    assert len(parts) == math.ceil(1003 / 40) and all(len(p) == 40 for p in parts[:-1])
    assert len(list(sp.chunks(items, 10, least=1))) == 10


# ----------------------------------------------------------------------------- progress


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_eta_lines_say_the_count_and_the_time_left_every_period():
    clock, lines = Clock(), []
    tick = EtaLines(lines.append, every=30, clock=clock)("matching", 1000)
    for _ in range(10):  # 100 pairs every 10 s
        clock.t += 10
        tick(100)
    # lines at 30 s and 60 s (90 s too: 900 of 1000); none once the phase is done
    assert lines == [
        "matching: 300 of 1,000 pairs (30%) in 30 s, about 1 min 10 s left",
        "matching: 600 of 1,000 pairs (60%) in 1 min 0 s, about 40 s left",
        "matching: 900 of 1,000 pairs (90%) in 1 min 30 s, about 10 s left",
    ]


def test_eta_arithmetic_and_durations():
    assert seconds_left(0, 10, 5.0) is None
    assert seconds_left(4, 10, 8.0) == pytest.approx(12.0)
    assert duration(59.4) == "59 s" and duration(125) == "2 min 5 s" and duration(7800) == "2 h 10 min"
    assert progress_line("mapping", 0, 50, 3.0) == "mapping: 0 of 50 images (0%) in 3 s, time left unknown"


def test_capped_tick_never_passes_the_total():
    got: list[int] = []
    tick = capped(got.append, 5)
    for n in (2, 1, 1, 1, 1, 2):
        tick(n)
    assert got == [2, 1, 1, 1] and sum(got) == 5


def test_counting_files_ticks_as_files_appear(tmp_path):
    got: list[int] = []
    with counting_files(tmp_path, "frame_*.jpg", got.append, every=0.01):
        for i in range(5):
            (tmp_path / f"frame_{i:05d}.jpg").write_bytes(b"x")
            (tmp_path / f"other_{i}.txt").write_bytes(b"x")
            time.sleep(0.03)
    assert sum(got) == 5 and all(n > 0 for n in got) and len(got) >= 2
    assert not any(t.name == "sfm-progress" for t in threading.enumerate())


def test_prepare_images_reports_progress_and_gives_space_free_sfm_names(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i, name in enumerate(["a b.jpg", "a_b.jpg", "c.jpg"]):
        Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)).save(src / name)
    (src / "d.jpg").write_bytes(b"not a jpeg")
    events: list[tuple[str, int, list[int]]] = []

    def on_phase(name: str, total: int):
        events.append((name, total, []))
        return events[-1][2].append

    files, _ = image_files(src)
    out = tmp_path / "out"
    prep = prepare_images(files, out / "images", out / "masks", out / "sfm", out / "sfm_masks", max_size=32,
                          on_phase=on_phase)  # fmt: skip
    assert [(name, total, sum(ticks)) for name, total, ticks in events] == [("reading images", 4, 4),
                                                                            ("preparing images", 3, 3)]  # fmt: skip
    assert prep.names == ["a b.jpg", "a_b.jpg", "c.jpg"]
    sfm_names = [prep.sfm_names[n] for n in prep.names]
    assert sfm_names == ["a_b.jpg", "a_b~2.jpg", "c.jpg"]
    assert all((out / "sfm" / n).is_file() for n in sfm_names)


def test_sfm_console_closes_the_bar_before_a_line_and_writes_lines_where_no_bar_shows(monkeypatch):
    from splatfield.apps import console

    class Bar:
        def __init__(self, total: int, desc: str, unit: str, disable: bool) -> None:
            self.desc, self.unit, self.disable, self.n, self.closed = desc, unit, disable, 0, False

        def update(self, n: int) -> None:
            self.n += n

        def close(self) -> None:
            self.closed = True

    made: list[Bar] = []
    monkeypatch.setattr(console, "progress", lambda total, desc, unit: made.append(Bar(total, desc, unit, False))
                        or made[-1])  # fmt: skip
    lines: list[str] = []
    opened: list = []
    log, on_phase = console.sfm_console(opened, lines.append)
    on_phase("matching", 10)(4)
    assert (made[0].desc, made[0].unit, made[0].n) == ("sfm: matching", "pair", 4) and opened == [made[0]]
    log("matching: done")  # the phase's result replaces its bar
    assert made[0].closed and opened == [] and lines == ["matching: done"]
    # no terminal: no bar is kept, the count goes to EtaLines (a line every 30 s)
    monkeypatch.setattr(console, "progress", lambda total, desc, unit: Bar(total, desc, unit, True))
    on_phase("mapping", 5)(2)
    assert opened == [] and lines == ["matching: done"]
