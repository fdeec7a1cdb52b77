"""The procedural object family of lifting (issue 17): seeded, ray cast, in view."""

from __future__ import annotations

import numpy as np

from splatfield.data import arrangements as A


def test_an_arrangement_is_its_seed():
    c2w = A.camera(20.0, 35.0)
    a, b = A.render(3, c2w, 32), A.render(3, c2w, 32)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, A.render(4, c2w, 32))


def test_every_held_out_and_some_training_arrangements_are_in_view_from_every_side():
    for seed in (*A.HELD_OUT, A.TRAIN_SEED_START, A.TRAIN_SEED_START + 1, A.TRAIN_SEED_START + 2):
        for azimuth in (0.0, 90.0, 180.0, 270.0):
            for elevation in (-10.0, 45.0):
                rgba = A.render(seed, A.camera(elevation, azimuth), 32)
                coverage = rgba[..., 3].mean()
                assert 0.02 < coverage < 0.6, (seed, azimuth, elevation, coverage)
                border = np.concatenate([rgba[0, :, 3], rgba[-1, :, 3], rgba[:, 0, 3], rgba[:, -1, 3]])
                assert border.max() == 0.0, (seed, azimuth, elevation)  # the whole object is in the frame


def test_views_differ_around_an_arrangement():
    """The patterns make the side an object is seen from visible (what a camera-conditioned prior learns)."""
    front, back = A.render(0, A.camera(15.0, 0.0), 32), A.render(0, A.camera(15.0, 180.0), 32)
    assert np.abs(front - back).mean() > 0.02
