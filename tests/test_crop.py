"""Crop and clean: the crop regions (a box with a rotation, a sphere) keep exactly the points
inside them, their options text round-trips through the export command's parser, each
filter of ``splatfield export`` counts what it removes in order, and bad values are one line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatfield.apps import cli
from splatfield.render import Gaussians
from splatfield.scenes.cleaning import clean, cropped
from splatfield.scenes.config import ConfigError
from splatfield.scenes.crop import CleanOptions, CropBox, CropRegion, CropSphere, number_text, tidy


def _rodrigues(axis, angle: float) -> np.ndarray:
    """A rotation matrix from an axis and an angle (not through a quaternion)."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _quat(axis, angle: float) -> tuple[float, float, float, float]:
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    return (math.cos(angle / 2), *(math.sin(angle / 2) * k).tolist())  # type: ignore[return-value]


def _tidied(values, digits: int = 6) -> tuple:
    return tuple(tidy(float(v), digits) for v in values)


def _gaussians(means, *, log_scales=None, opacity=None, sh_rest: int = 0) -> Gaussians:
    m = torch.as_tensor(np.asarray(means), dtype=torch.float32)
    n = len(m)
    return Gaussians(m, torch.zeros(n, 3) if log_scales is None else torch.as_tensor(log_scales, dtype=torch.float32),
                     torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
                     torch.zeros(n) if opacity is None else torch.logit(torch.as_tensor(opacity, dtype=torch.float32)),
                     torch.zeros(n, 1, 3), torch.zeros(n, sh_rest, 3))  # fmt: skip


# ----------------------------------------------------------------------------- regions


def test_axis_aligned_box_keeps_points_on_and_just_inside_its_faces():
    box = CropBox((1.0, -2.0, 0.5), (2.0, 4.0, 1.0))
    half = np.array([1.0, 2.0, 0.5])
    points, expect = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            for factor, inside in ((1 - 1e-9, True), (1.0, True), (1 + 1e-9, False), (1.5, False)):
                p = np.array(box.centre)
                p[axis] += sign * half[axis] * factor
                points.append(p)
                expect.append(inside)
    points.append(np.array(box.centre))
    expect.append(True)
    assert box.contains(np.array(points)).tolist() == expect


def test_rotated_box_keeps_exactly_the_points_inside():
    axis, angle = (0.3, -0.5, 0.8), 0.7
    centre, size = np.array([0.4, -1.2, 2.0]), np.array([1.5, 0.6, 2.4])
    box = CropBox(tuple(centre), tuple(size), _quat(axis, angle))  # type: ignore[arg-type]
    R = _rodrigues(axis, angle)
    np.testing.assert_allclose(box.matrix, R, atol=1e-12)
    half = size / 2
    # just inside and just outside each face, elsewhere well within the other two extents
    rng = np.random.default_rng(0)
    local, expect = [], []
    for a in range(3):
        for sign in (-1.0, 1.0):
            for factor, inside in ((1 - 1e-6, True), (1 + 1e-6, False)):
                p = rng.uniform(-0.9, 0.9, 3) * half
                p[a] = sign * half[a] * factor
                local.append(p)
                expect.append(inside)
    world = centre + np.array(local) @ R.T
    assert box.contains(world).tolist() == expect
    # the same points in an axis-aligned box of the same size are not the same set: the rotation counts
    assert CropBox(tuple(centre), tuple(size)).contains(world).tolist() != expect  # type: ignore[arg-type]
    # random points, against the box coordinates solved independently
    pts = centre + rng.uniform(-1.6, 1.6, (5000, 3))
    coords = np.linalg.solve(R, (pts - centre).T).T
    margin = np.min(np.abs(np.abs(coords) - half), axis=1)
    clear = margin > 1e-9  # no point on a face
    truth = np.all(np.abs(coords) <= half, axis=1)
    assert truth.sum() > 100 and (~truth).sum() > 100
    assert np.array_equal(box.contains(pts)[clear], truth[clear])
    # the corners lie on the box
    assert box.contains(centre + (box.corners() - centre) * (1 - 1e-9)).all()
    assert not box.contains(centre + (box.corners() - centre) * (1 + 1e-6)).any()


def test_quarter_turn_swaps_the_extents_and_the_quaternion_is_normalised():
    long_x = CropBox((0.0, 0.0, 0.0), (4.0, 1.0, 1.0))
    turned = CropBox((0.0, 0.0, 0.0), (4.0, 1.0, 1.0), (2.0, 0.0, 0.0, 2.0))  # 90 degrees about z, norm 2*sqrt(2)
    pts = np.array([[1.9, 0.0, 0.0], [0.0, 1.9, 0.0]])
    assert long_x.contains(pts).tolist() == [True, False]
    assert turned.contains(pts).tolist() == [False, True]


def test_sphere_and_intersection():
    sphere = CropSphere((1.0, 2.0, -1.0), 0.75)
    dirs = np.random.default_rng(1).normal(size=(50, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    c = np.array(sphere.centre)
    assert sphere.contains(c + dirs * 0.75 * (1 - 1e-9)).all()
    assert not sphere.contains(c + dirs * 0.75 * (1 + 1e-9)).any()
    region = CropRegion(CropBox((1.0, 2.0, -1.0), (1.0, 1.0, 10.0)), sphere)
    pts = np.array([[1.0, 2.0, -1.6], [1.0, 2.0, -1.8], [1.6, 2.0, -1.0], [1.45, 2.0, -1.0]])
    assert region.contains(pts).tolist() == [True, False, False, True]
    assert CropRegion().contains(pts).all() and not CropRegion()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        region.contains(np.zeros((4, 2)))


def test_crop_keeps_exactly_the_gaussians_whose_mean_is_inside():
    rng = np.random.default_rng(2)
    means = rng.uniform(-2, 2, (3000, 3)).astype(np.float32)
    g = _gaussians(means)
    box = CropBox((0.2, -0.1, 0.3), (1.7, 2.2, 1.1), _quat((1.0, 1.0, 0.0), 0.9))
    kept = cropped(g, CropRegion(box=box))
    expect = box.contains(means.astype(np.float64))
    assert 0 < expect.sum() < len(means) and len(kept) == int(expect.sum())
    assert torch.equal(kept.means, g.means[torch.from_numpy(expect)])  # the same Gaussians, in the scene's order
    out, removed = clean(g, CleanOptions(CropRegion(box=box)))
    assert torch.equal(out.means, kept.means) and [(r.option, r.count) for r in removed] == [
        ("--crop-box", len(means) - len(kept))]


# ----------------------------------------------------------------------------- options text


def test_number_text_is_exact_and_short():
    for x in (0.0, 1.0, -0.5, 0.1, 1e-7, -1.5e-5, 123456.0, 1234567.0, 0.1 + 0.2, math.pi, -2.0 / 3, 5e-324):
        assert float(number_text(x)) == x
    assert number_text(0.25) == "0.25" and number_text(0.1 + 0.2) == repr(0.1 + 0.2) and number_text(2.0) == "2"
    assert str(tidy(-0.0)) == "0.0" and tidy(math.pi) == 3.14159 and tidy(-1.23456789e-30) == -1.23457e-30


def test_options_text_round_trips_through_the_export_parser():
    rng = np.random.default_rng(3)
    for i in range(20):
        c, s = rng.normal(size=3) * 10 ** rng.uniform(-3, 3), rng.uniform(0.01, 5, 3)
        q = rng.normal(size=4)
        box = CropBox(tuple(c), tuple(s), tuple(q) if i % 3 else (1.0, 0.0, 0.0, 0.0))  # type: ignore[arg-type]
        sphere = CropSphere(_tidied(rng.normal(size=3), 17), float(rng.uniform(0.1, 3))) if i % 2 else None
        region = CropRegion(box, sphere)
        text = region.text()
        assert ("--crop-rotation" in text) == bool(i % 3) and ("--crop-sphere" in text) == bool(i % 2)
        assert CropRegion.parse(text) == region
        cmd = cli.parse(["export", "runs/x", *region.options(), "--max-scale", "0.5"])
        assert cmd.clean_options.region == region and cmd.clean_options.max_scale == 0.5
        pts = rng.normal(size=(2000, 3)) * 3 + c
        assert np.array_equal(cmd.clean_options.region.contains(pts), region.contains(pts))
    opts = CleanOptions(CropRegion(sphere=CropSphere((0.0, 0.0, 0.0), 1.0)), 0.05, 0.2, 1.5)
    assert cli.parse(["export", "x", *opts.options()]).clean_options == opts


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--crop-box", "0", "0", "0", "0", "1", "1"], "--crop-box: sizes SX SY SZ must be > 0 (got 0 1 1)"),
        (["--crop-box", "0", "0", "0", "1", "-2", "1"], "--crop-box: sizes SX SY SZ must be > 0 (got 1 -2 1)"),
        (["--crop-box", "0", "nan", "0", "1", "1", "1"], "--crop-box: numbers must be finite"),
        (["--crop-box", "0", "0", "0", "1", "1", "inf"], "--crop-box: numbers must be finite"),
        (["--crop-box", "0", "0", "0", "1", "1", "1", "--crop-rotation", "0", "0", "0", "0"],
         "--crop-rotation: the quaternion QW QX QY QZ is zero"),
        (["--crop-box", "0", "0", "0", "1", "1", "1", "--crop-rotation", "1", "nan", "0", "0"],
         "--crop-rotation: numbers must be finite"),
        (["--crop-rotation", "1", "0", "0", "0"], "--crop-rotation: rotates the --crop-box: give --crop-box too"),
        (["--crop-sphere", "0", "0", "0", "0"], "--crop-sphere: radius R must be > 0"),
        (["--max-scale", "0"], "--max-scale: must be > 0"),
        (["--max-scale", "nan"], "--max-scale: must be > 0"),
        (["--min-contribution", "-1"], "--min-contribution: must be > 0"),
    ],
)  # fmt: skip
def test_bad_crop_and_clean_options_are_one_line(tmp_path, capsys, argv, message):
    code = cli.run(["export", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"splatfield: error: {message}") and len(err.splitlines()) == 1, err


def test_crop_objects_refuse_bad_values():
    with pytest.raises(ConfigError, match="--crop-box: expects 3 numbers"):
        CropBox((0.0, 0.0), (1.0, 1.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--crop-rotation: expects 4 numbers"):
        CropBox((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--min-opacity"):
        CleanOptions(min_opacity=1.0)


# ----------------------------------------------------------------------------- filters


def test_each_filter_counts_what_it_removes_in_order():
    # 10 Gaussians on the x axis at 0..9; box keeps x <= 6.5, sphere keeps x >= 0.5 (of those)
    x = np.arange(10, dtype=np.float32)
    means = np.stack([x, np.zeros(10), np.zeros(10)], axis=1)
    opacity = np.array([0.9, 0.9, 0.01, 0.9, 0.9, 0.02, 0.9, 0.01, 0.9, 0.9])
    log_scales = np.zeros((10, 3))
    log_scales[3, 1] = math.log(2.0)  # largest axis 2 > 1.5
    log_scales[8, 0] = math.log(5.0)  # outside the box anyway
    g = _gaussians(means, log_scales=log_scales, opacity=opacity)
    options = CleanOptions(CropRegion(CropBox((3.0, 0.0, 0.0), (7.0, 1.0, 1.0)), CropSphere((4.0, 0.0, 0.0), 3.5)),
                           min_opacity=0.05, max_scale=1.5)  # fmt: skip
    out, removed = clean(g, options)
    assert [(r.option, r.count) for r in removed] == [
        ("--crop-box", 3),  # x = 7, 8, 9
        ("--crop-sphere", 1),  # x = 0 (the sphere spans 0.5..7.5)
        ("--min-opacity", 2),  # x = 2, 5
        ("--max-scale", 1),  # x = 3
    ]
    assert out.means[:, 0].tolist() == [1.0, 4.0, 6.0]
    # only the filters given are counted; none given: the scene itself
    assert clean(g, CleanOptions())[1] == [] and clean(g, CleanOptions())[0] is g


def test_min_contribution_removes_what_no_training_view_sees(small_run, native):
    from splatfield.apps import exporting as ex
    from splatfield.render import rasterize
    from splatfield.scenes.elastic import importance_over

    src = ex.load_source(small_run, views=1)
    cams = src.train_cameras
    assert cams is not None and len(cams) == 12
    g = src.gaussians
    n = len(g)
    # add 5 floaters far outside every view
    far = _gaussians(np.array([[500.0, 500.0, 500.0 + i] for i in range(5)]), opacity=[0.9] * 5, sh_rest=g.shN.shape[1])
    both = Gaussians(*(torch.cat([a.detach(), b.to(a.dtype)]) for a, b in zip(g.tensors(), far.tensors())))
    # reduce="max": the largest per-view sum, matching views rasterized one by one
    best = importance_over(both, cams, reduce="max")
    per_view = torch.stack([rasterize(both, cams[i : i + 1].to(dtype=torch.float32), stats=("importance",)).stats
                            .importance[0].double() for i in range(len(cams))])  # fmt: skip
    torch.testing.assert_close(best, per_view.max(dim=0).values)
    assert (best <= importance_over(both, cams) + 1e-9).all() and (best[n:] == 0).all()
    threshold = 0.5
    out, removed = clean(both, CleanOptions(min_contribution=threshold), cameras=cams)
    expect = best >= threshold
    assert not expect[n:].any() and removed[0].option == "--min-contribution"
    assert removed[0].count == int((~expect).sum()) and removed[0].count >= 5
    assert torch.equal(out.means, both.means[expect])
    with pytest.raises(ConfigError, match="--min-contribution: needs the training cameras"):
        clean(both, CleanOptions(min_contribution=1.0))


def test_export_command_crops_cleans_and_reports(small_run, tmp_path, capsys, native):
    import dataclasses

    from splatfield.apps import exporting as ex
    from splatfield.scenes import formats
    from splatfield.scenes.elastic import importance_over

    src = ex.load_source(small_run, views=1)
    g = src.gaussians.detach()
    lo, hi = torch.quantile(g.means, 0.2, dim=0), torch.quantile(g.means, 0.8, dim=0)
    centre = ((lo + hi) / 2).tolist()
    size = ((hi - lo) * 1.3).tolist()
    box = CropBox(_tidied(centre), _tidied(size), _quat((0.2, 1.0, 0.3), 0.4))
    largest = torch.exp(g.log_scales.max(dim=1).values)
    max_scale = float(torch.quantile(largest, 0.9))
    first = CleanOptions(CropRegion(box=box), min_opacity=0.1, max_scale=max_scale)
    best = importance_over(clean(g, first)[0], src.train_cameras, reduce="max")
    options = dataclasses.replace(first, min_contribution=tidy(float(torch.quantile(best, 0.2)) + 1e-6))
    argv = ["export", str(small_run), "--format", "ply", "--out", str(tmp_path), "--views", "1", *options.options()]
    assert cli.run(argv) == 0
    out = capsys.readouterr().out.splitlines()
    expect, removed = clean(g, options, cameras=src.train_cameras)
    assert [r.option for r in removed] == ["--crop-box", "--min-opacity", "--max-scale", "--min-contribution"]
    assert all(r.count > 0 for r in removed), removed
    report = ", ".join(f"{r.option} removed {r.count:,}" for r in removed)
    assert out[0] == f"splatfield export: scene-crop: {report} (kept {len(expect):,} of {len(g):,} Gaussians)"
    written = formats.read_ply(tmp_path / "scene-crop.ply")
    assert torch.equal(written.means, expect.means) and torch.equal(written.opacity_logits, expect.opacity_logits)
    assert f"{len(expect):,} of {len(g):,} Gaussians" in out[1]
    # the ply's Gaussians are exactly those inside the box among the run's (then cleaned)
    inside = box.contains(g.means.double().numpy())
    assert len(written) <= int(inside.sum()) and box.contains(written.means.double().numpy()).all()


def test_floaters_of_a_bare_file_and_an_empty_crop_are_one_line(small_run, tmp_path, capsys, native):
    ply = small_run / "scene.ply"
    code = cli.run(["export", str(ply), "--out", str(tmp_path), "--min-contribution", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("splatfield: error: --min-contribution: needs a run's training cameras;")
    assert "scene.ply" in err
    code = cli.run(["export", str(ply), "--out", str(tmp_path), "--crop-sphere", "1000", "0", "0", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("splatfield: error: --crop-sphere: leaves none of the")
    assert not list(tmp_path.iterdir())


def test_crop_comes_after_the_size_ratio(small_elastic_run, tmp_path, capsys, native):
    from splatfield.apps import exporting as ex
    from splatfield.scenes import formats

    src = ex.load_source(small_elastic_run, views=1)
    at_half = src.at_ratio(0.5)
    sphere = CropSphere(_tidied(at_half.means.median(dim=0).values.tolist()), 0.6)
    argv = ["export", str(small_elastic_run), "--ratio", "0.5", "--format", "ply", "--out", str(tmp_path),
            "--views", "1", *sphere.options()]  # fmt: skip
    assert cli.run(argv) == 0
    out = capsys.readouterr().out.splitlines()
    written = formats.read_ply(tmp_path / "scene-r0.5-crop.ply")
    expect = cropped(at_half, CropRegion(sphere=sphere))
    assert 0 < len(written) < len(at_half) and torch.equal(written.means, expect.means)
    gone = len(at_half) - len(expect)
    assert out[0].startswith(f"splatfield export: scene-r0.5-crop: --crop-sphere removed {gone:,} ")
