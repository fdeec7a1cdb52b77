"""The commands' side of elastic size (issue 16): `export --ratio/--gaussians/--max-mb/--lod`,
`render --ratio`, `eval --ratios [--capped-runs]`, and the importance baseline's statistic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from splatfield.apps import cli, plot
from splatfield.apps.media import to_uint8
from splatfield.apps.ratios import METHODS
from splatfield.apps.run_data import load_dataset
from splatfield.apps.sources import open_source
from splatfield.render import Gaussians, rasterize
from splatfield.scenes import formats
from splatfield.scenes.elastic import baseline_order, importance_over, kept_count, subset, top
from splatfield.scenes.evaluate import evaluate
from splatfield.scenes.gaussian_scene import FixedGaussians
from splatfield.scenes.run import Run

FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN")


def command(*args: str, capsys) -> tuple[int, str, str]:
    code = cli.run([*args, "--device", "cpu"])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str, *parts: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("splatfield: error: "), lines[0]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def assert_same(a: Gaussians, b: Gaussians) -> None:
    assert len(a) == len(b)
    for name in FIELDS:
        torch.testing.assert_close(getattr(a, name).float(), getattr(b, name).float(), rtol=0, atol=1e-6, msg=name)


def top_transformed(src, r: float) -> tuple[Gaussians, list[int]]:
    """The scene's top ceil(r N) Gaussians by the elastic model's ranking, transformed at r
    (built here from the model's parts, not through at_ratio), and their indices."""
    model, g = src.elastic, src.scene.gaussians
    idx = top(model.order(g), r)
    if r >= 1.0:
        return subset(g, idx), idx.tolist()
    with torch.no_grad():
        return model.transformed(subset(g, idx), model.features(g)[idx], r, idx), idx.tolist()


@pytest.fixture(scope="module")
def elastic(small_elastic_run):
    src = open_source(small_elastic_run)
    assert src.elastic is not None
    return src


# ----------------------------------------------------------------------------- export


def test_export_ratio_is_the_scene_at_that_ratio(small_elastic_run, elastic, tmp_path, capsys):
    g = elastic.scene.gaussians
    N = len(g)
    code, out, err = command("export", str(small_elastic_run), "--ratio", "0.3", "--format", "ply", "--out",
                             str(tmp_path), "--views", "1", capsys=capsys)  # fmt: skip
    assert code == 0, err
    got = formats.read_splats(tmp_path / "scene-r0.3.ply")
    assert len(got) == math.ceil(0.3 * N) == kept_count(0.3, N)
    want = elastic.at_ratio(0.3).gaussians
    assert_same(got, want)
    plain = subset(g, top(elastic.elastic.order(g), 0.3))  # the same Gaussians, before the transform
    assert_same(got, top_transformed(elastic, 0.3)[0])  # the top ones by the ranking, transformed
    assert not torch.equal(got.means, plain.means)  # the transform was applied
    assert f"{len(got):,} of {N:,} Gaussians" in out.splitlines()[0]
    assert out.splitlines()[2].split()[0] == "ply"


def test_export_ratio_comes_before_min_opacity(small_elastic_run, elastic, tmp_path, capsys):
    g = elastic.scene.gaussians
    reduced = elastic.at_ratio(0.5).gaussians
    keep = torch.sigmoid(reduced.opacity_logits) >= 0.4
    other_way = kept_count(0.5, int((torch.sigmoid(g.opacity_logits) >= 0.4).sum()))  # the filter first
    assert 0 < int(keep.sum()) < len(reduced) and int(keep.sum()) != other_way
    code, out, err = command("export", str(small_elastic_run), "--ratio", "0.5", "--min-opacity", "0.4", "--sh-degree",
                             "0", "--format", "ply", "--out", str(tmp_path), "--views", "1", capsys=capsys)  # fmt: skip
    assert code == 0, err
    got = formats.read_splats(tmp_path / "scene-r0.5.ply")
    assert got.max_sh_degree == 0
    assert_same(got, reduced.select(keep).with_(shN=reduced.shN[keep][:, :0].contiguous()))


def test_export_lod_levels_are_nested(small_elastic_run, elastic, tmp_path, capsys):
    g = elastic.scene.gaussians
    N = len(g)
    code, out, err = command("export", str(small_elastic_run), "--lod", "0.05", "1", "0.25", "--format", "ply",
                             "--out", str(tmp_path), "--views", "1", capsys=capsys)  # fmt: skip
    assert code == 0, err
    names = ["scene-lod0-r1.ply", "scene-lod1-r0.25.ply", "scene-lod2-r0.05.ply"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    order = elastic.elastic.order(g)
    kept = []
    for name, r in zip(names, (1.0, 0.25, 0.05)):
        got = formats.read_splats(tmp_path / name)
        assert len(got) == kept_count(r, N)
        assert_same(got, elastic.at_ratio(r).gaussians)  # each level transformed at its own ratio
        want, idx = top_transformed(elastic, r)
        assert_same(got, want)
        assert idx == top(order, r).tolist()
        kept.append(set(idx))
    assert kept[2] < kept[1] < kept[0] == set(range(N))  # nested: the levels share their Gaussians
    table = [line.split() for line in out.splitlines()[2:]]
    assert [(row[0], row[1], row[2]) for row in table] == [("0", "1", f"{N:,}"), ("1", "0.25", f"{kept_count(0.25, N):,}"),
                                                          ("2", "0.05", f"{kept_count(0.05, N):,}")]  # fmt: skip


def test_export_gaussians_gives_that_count(small_elastic_run, elastic, tmp_path, capsys):
    N = len(elastic.scene.gaussians)
    n = N // 3
    code, out, err = command("export", str(small_elastic_run), "--gaussians", str(n), "--format", "splat", "--out",
                             str(tmp_path), "--views", "1", capsys=capsys)  # fmt: skip
    assert code == 0, err
    got = formats.read_splats(tmp_path / f"scene-n{n}.splat")
    assert len(got) == n
    assert f"--gaussians {n:,}: ratio" in out.splitlines()[0]
    code, out, err = command("export", str(small_elastic_run), "--gaussians", str(10 * N), "--format", "splat", "--out",
                             str(tmp_path), "--views", "1", capsys=capsys)  # fmt: skip
    assert code == 0, err
    assert len(formats.read_splats(tmp_path / f"scene-n{10 * N}.splat")) == N


def test_export_max_mb_fits_the_bound(small_elastic_run, elastic, tmp_path, capsys):
    N = len(elastic.scene.gaussians)
    # splat: 32 bytes a Gaussian, no header: the largest fitting count is known exactly
    k = N // 4
    mb = 32 * k / 1e6
    code, out, err = command("export", str(small_elastic_run), "--max-mb", repr(mb), "--format", "splat", "--out",
                             str(tmp_path), "--views", "1", capsys=capsys)  # fmt: skip
    assert code == 0, err
    path = tmp_path / f"scene-{mb:g}mb.splat"
    assert path.stat().st_size <= mb * 1e6
    assert len(formats.read_splats(path)) == k
    line = out.splitlines()[0]
    assert line.startswith(f"splatfield export: --max-mb {mb:g}: ratio {k / N:.6g} ({k:,} of {N:,} Gaussians"), line
    # spz (gzip): half the full file's size; the result fits and keeps most of what fits
    code, _, err = command("export", str(small_elastic_run), "--format", "spz", "--out", str(tmp_path / "full"),
                           "--views", "1", capsys=capsys)  # fmt: skip
    assert code == 0, err
    half = (tmp_path / "full" / "scene.spz").stat().st_size / 2 / 1e6
    code, out, err = command("export", str(small_elastic_run), "--max-mb", repr(half), "--format", "spz", "--out",
                             str(tmp_path), "--views", "1", capsys=capsys)  # fmt: skip
    assert code == 0, err
    path = tmp_path / f"scene-{half:g}mb.spz"
    assert path.stat().st_size <= half * 1e6
    assert 0.3 * N < len(formats.read_splats(path)) < 0.7 * N
    assert "ratio" in out.splitlines()[0] and "bytes as spz" in out.splitlines()[0]


def test_export_errors_are_one_line(small_run, small_elastic_run, tmp_path, capsys):
    run, el = str(small_run), str(small_elastic_run)
    for args in (("--ratio", "0.5"), ("--gaussians", "10"), ("--lod", "1", "0.5"), ("--max-mb", "0.001")):
        code, _, err = command("export", run, *args, "--out", str(tmp_path), "--views", "1", capsys=capsys)
        one_line_error(code, err, str(small_run), "has no elastic model", "--strategy adc elastic")
    code, _, err = command("export", run, "--ratio", "1", "--out", str(tmp_path), "--views", "1", capsys=capsys)
    assert code == 0, err  # ratio 1 is the scene itself, elastic model or not
    code, _, err = command("export", el, "--ratio", "0", capsys=capsys)
    one_line_error(code, err, "--ratio", "(0, 1]")
    code, _, err = command("export", el, "--ratio", "1.5", capsys=capsys)
    one_line_error(code, err, "--ratio", "(0, 1]")
    code, _, err = command("export", el, "--lod", "1", "0", capsys=capsys)
    one_line_error(code, err, "--lod", "(0, 1]")
    code, _, err = command("export", el, "--ratio", "0.5", "--lod", "1", "0.5", capsys=capsys)
    one_line_error(code, err, "--ratio and --lod")
    code, _, err = command("export", el, "--gaussians", "10", "--max-mb", "1", capsys=capsys)
    one_line_error(code, err, "--gaussians and --max-mb")
    code, _, err = command("export", el, "--max-mb", "1", "--format", "spz", "ply", capsys=capsys)
    one_line_error(code, err, "--max-mb", "one --format")
    code, _, err = command("export", el, "--max-mb", "0.00001", "--format", "spz", "--out", str(tmp_path),
                           capsys=capsys)  # fmt: skip
    one_line_error(code, err, "--max-mb", "even one Gaussian")


# ----------------------------------------------------------------------------- render


def test_render_ratio_writes_the_reduced_scene(small_elastic_run, elastic, tmp_path, capsys):
    N = len(elastic.scene.gaussians)
    reduced = elastic.at_ratio(0.25)
    code, out, err = command("render", str(small_elastic_run), "--ratio", "0.25", "--split", "test", "--out",
                             str(tmp_path / "split"), capsys=capsys)  # fmt: skip
    assert code == 0, err
    metrics = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert metrics["num_gaussians"] == kept_count(0.25, N) == len(reduced)
    pngs = sorted((tmp_path / "split").glob("*.png"))
    test = elastic.dataset.test
    assert len(pngs) == len(test) == 3
    cams = test.cameras.to(dtype=torch.float32)
    for i, png in enumerate(pngs):
        got = np.asarray(Image.open(png).convert("RGB"))
        want = to_uint8(reduced.render(cams[i : i + 1], background=elastic.background).image[0])
        full = to_uint8(elastic.scene.render(cams[i : i + 1], background=elastic.background).image[0])
        assert np.array_equal(got, want)
        assert not np.array_equal(got, full)
    res = evaluate(reduced, cams, test.image, background=elastic.background, use_lpips=False)
    assert metrics["psnr"] == pytest.approx(res.psnr, abs=1e-9)

    code, out, err = command("render", str(small_elastic_run), "--ratio", "0.25", "--frames", "3", "--size", "24", "24",
                             "--out", str(tmp_path / "frames"), capsys=capsys)  # fmt: skip
    assert code == 0, err
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert len(frames) == 3 and Image.open(frames[0]).size == (24, 24)
    assert f"of {len(reduced):,} Gaussians (ratio 0.25)" in out


def test_render_ratio_errors(small_run, small_elastic_run, tmp_path, capsys):
    code, _, err = command("render", str(small_run), "--ratio", "0.5", "--split", "test", "--out",
                           str(tmp_path / "x"), capsys=capsys)  # fmt: skip
    one_line_error(code, err, "has no elastic model")
    code, _, err = command("render", str(small_elastic_run), "--ratio", "0", capsys=capsys)
    one_line_error(code, err, "--ratio", "(0, 1]")
    code, _, err = command("render", str(small_elastic_run), "--ratio", "1.5", capsys=capsys)
    one_line_error(code, err, "--ratio", "(0, 1]")


# ----------------------------------------------------------------------------- eval --ratios


def test_importance_over_sums_alpha_t_over_the_views(elastic):
    g = elastic.scene.gaussians
    cams = elastic.dataset.train.cameras.to(dtype=torch.float32)
    imp = importance_over(g, elastic.dataset.train.cameras)
    assert imp.shape == (len(g),) and imp.dtype == torch.float64
    batched = rasterize(g, cams, stats=("importance",)).stats.importance.sum(0).double()
    torch.testing.assert_close(imp, batched, rtol=1e-5, atol=1e-6)
    assert (imp > 0).any() and (imp >= 0).all()
    twice = importance_over(g, cams[torch.tensor([0, 0])])
    one = importance_over(g, cams[0:1])
    torch.testing.assert_close(twice, 2 * one)
    # a Gaussian behind the camera contributes nothing
    c2w = torch.linalg.inv(cams.world_to_camera[0].double())
    behind = Gaussians(*(torch.cat([t, t[:1]]) for t in g.tensors()))
    behind.means[-1] = (c2w[:3, 3] - c2w[:3, 2]).float()
    assert float(importance_over(behind, cams[0:1])[-1]) == 0.0
    assert float(importance_over(behind, cams[0:1])[0]) == float(one[0])


def test_eval_ratios_rows_table_and_plot(small_elastic_run, small_run, elastic, capsys):
    g = elastic.scene.gaussians
    N = len(g)
    code, out, err = command("eval", str(small_elastic_run), capsys=capsys)  # the plain evaluation
    assert code == 0, err
    plain = json.loads((small_elastic_run / "metrics.json").read_text())
    ratios = (1.0, 0.5, 0.1)
    code, out, err = command("eval", str(small_elastic_run), "--ratios", "0.1", "1", "0.5", "--capped-runs",
                             str(small_run), capsys=capsys)  # fmt: skip
    assert code == 0, err
    rows = json.loads((small_elastic_run / "ratios.json").read_text())
    assert all(set(row) == {"ratio", "method", "psnr", "ssim", "num_gaussians"} for row in rows)
    methods = ("elastic", "importance", "opacity", "random")
    assert [(row["ratio"], row["method"]) for row in rows[:-1]] == [(r, m) for r in ratios for m in methods]
    for row in rows[:-1]:
        assert row["num_gaussians"] == math.ceil(row["ratio"] * N) == kept_count(row["ratio"], N)
        assert math.isfinite(row["psnr"]) and 0 < row["ssim"] <= 1
    by = {(row["ratio"], row["method"]): row for row in rows}
    assert by[(1.0, "elastic")]["psnr"] == pytest.approx(plain["psnr"], abs=1e-9)
    assert by[(1.0, "elastic")]["ssim"] == pytest.approx(plain["ssim"], abs=1e-9)

    # each row is its method's scene, measured on every test view
    test = elastic.dataset.test
    cams = test.cameras.to(dtype=torch.float32)
    importance = importance_over(g, elastic.dataset.train.cameras)

    def measured(scene) -> tuple[float, float]:
        res = evaluate(scene, cams, test.image, background=elastic.background, mask_at=test.mask, use_lpips=False)
        return res.psnr, res.ssim

    for r in (0.5, 0.1):
        scenes = {"elastic": elastic.at_ratio(r)}
        for m in ("importance", "opacity", "random"):
            scenes[m] = FixedGaussians(subset(g, top(baseline_order(m, g, importance, seed=0), r)))
        for m, scene in scenes.items():
            psnr, ssim = measured(scene)
            assert by[(r, m)]["psnr"] == pytest.approx(psnr, abs=1e-9), (r, m)
            assert by[(r, m)]["ssim"] == pytest.approx(ssim, abs=1e-9), (r, m)
        assert len({round(by[(r, m)]["psnr"], 9) for m in methods}) == 4  # four different scenes

    capped = rows[-1]
    other = Run.open(small_run).scene()
    assert capped["method"] == "capped" and capped["num_gaussians"] == len(other)
    assert capped["ratio"] == pytest.approx(len(other) / N)
    assert capped["psnr"] == pytest.approx(measured(other)[0], abs=1e-9)

    table = [words for words in map(str.split, out.splitlines()) if len(words) > 1 and words[1] in METHODS]
    assert len(table) == len(rows) and [t[1] for t in table] == [row["method"] for row in rows]
    assert [float(t[3]) for t in table] == [round(row["psnr"], 3) for row in rows]

    with Image.open(small_elastic_run / "ratios.png") as img:
        assert img.format == "PNG" and img.size == (900, 560)
        colours = set(map(tuple, np.asarray(img.convert("RGB")).reshape(-1, 3).tolist()))
    assert all(plot.PALETTE[k] in colours for k in range(5))  # four lines and the capped points


def test_eval_ratios_without_elastic_model_reports_the_baselines(small_run, capsys):
    code, out, err = command("eval", str(small_run), "--ratios", "1", "0.25", capsys=capsys)
    assert code == 0, err
    rows = json.loads((small_run / "ratios.json").read_text())
    assert [(row["ratio"], row["method"]) for row in rows] == [(r, m) for r in (1.0, 0.25)
                                                               for m in ("importance", "opacity", "random")]  # fmt: skip
    assert "no elastic model" in out
    assert (small_run / "ratios.png").is_file()


def test_eval_ratios_errors(small_elastic_run, tmp_path, capsys):
    run = str(small_elastic_run)
    for bad in ("0", "1.5", "-0.1", "nan"):
        code, _, err = command("eval", run, "--ratios", "1", bad, capsys=capsys)
        one_line_error(code, err, "--ratios", "(0, 1]")
    code, _, err = command("eval", run, "--capped-runs", run, capsys=capsys)
    one_line_error(code, err, "--capped-runs", "--ratios")
    code, _, err = command("eval", run, "--ratios", "0.5", "--capped-runs", str(tmp_path / "missing"), capsys=capsys)
    one_line_error(code, err, str(tmp_path / "missing"))
    code, _, err = command("eval", str(tmp_path), "--ratios", "0.5", capsys=capsys)
    one_line_error(code, err, str(tmp_path))


def test_capped_run_on_other_views_is_refused(small_elastic_run, tmp_path, capsys):
    from splatfield.data import procedural
    from splatfield.scenes.options import run_config

    # a run on data with other test views (its checkpoint is never read: the views are checked first)
    data = procedural.write_demo_dataset(tmp_path / "data", size=24, train_views=4, test_views=2)
    other = Run.create(tmp_path / "other", run_config(str(data), str(tmp_path / "other")))
    (other.path / "scene.ply").write_bytes((small_elastic_run / "scene.ply").read_bytes())
    code, _, err = command("eval", str(small_elastic_run), "--ratios", "0.5", "--capped-runs", str(other.path),
                           capsys=capsys)  # fmt: skip
    one_line_error(code, err, str(other.path), "test views are not those of")
    assert load_dataset(other.config).test.cameras.width == 24


def test_log_axis_ticks():
    lo, hi, ts = plot.log_ticks(0.01, 1.0)
    assert (lo, hi) == pytest.approx((0.01, 1.0)) and ts == pytest.approx([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0])
    lo, hi, ts = plot.log_ticks(0.0001, 2.0)
    assert (lo, hi) == pytest.approx((1e-4, 10.0)) and ts == pytest.approx([1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0])
    assert plot.log_ticks(1.0, 1.0)[:2] == pytest.approx((0.1, 1.0))
    assert [plot.log_tick_label(v) for v in (0.01, 0.05, 0.2, 1.0, 10.0)] == ["0.01", "0.05", "0.2", "1", "10"]
    img = plot.draw([plot.Series("a", [0.01, 0.1, 1.0], [20.0, 25.0, 30.0]), plot.Series("b", [0.3], [27.0], line=False)],
                    title="t", x_label="x", y_label="y", size=(320, 240), x_log=True)  # fmt: skip
    assert img.size == (320, 240)
