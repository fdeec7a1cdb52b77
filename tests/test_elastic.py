"""Elastic model size (scenes/elastic.py, scenes/strategies/elastic.py): inference is
deterministic and nested, the untrained selector is the importance ranking, the baselines
rank as they say, and the strategy's state survives a checkpoint."""

from __future__ import annotations

import io
import math

import pytest
import torch

from splatfield.render import Gaussians
from splatfield.scenes.elastic import (
    KNOTS, RANKING_METHODS, DeltaTable, ElasticModel, baseline_order, kept_count, top,
)  # fmt: skip

RATIOS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.01)


def random_gaussians(n: int, seed: int = 0, sh_degree: int = 1) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    K = (sh_degree + 1) ** 2
    return Gaussians(
        torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g) * 0.3 - 3, torch.randn(n, 4, generator=g),
        torch.randn(n, generator=g), torch.randn(n, 1, 3, generator=g), torch.randn(n, K - 1, 3, generator=g) * 0.1,
    )  # fmt: skip


def trained_model(g: Gaussians, seed: int = 1, transform: str = "mlp") -> ElasticModel:
    """A model with importance and non-zero networks (as after training), fixed by ``seed``."""
    model = ElasticModel(len(g), hidden=16, transform=transform)  # type: ignore[arg-type]
    model.fit_normalisation(g)
    gen = torch.Generator().manual_seed(seed)
    model.importance.copy_(torch.rand(len(g), generator=gen, dtype=torch.float64) * 100)
    model.views_seen.fill_(10)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def test_kept_count_is_the_ceiling_and_refuses_ratios_outside_0_1():
    assert kept_count(1.0, 1000) == 1000 and kept_count(0.1, 1000) == 100 and kept_count(0.001, 1000) == 1
    assert kept_count(0.0101, 1000) == 11 and kept_count(0.5, 3) == 2
    for bad in (0.0, -0.5, 1.5, math.nan):
        with pytest.raises(ValueError, match="ratio"):
            kept_count(bad, 10)


def test_inference_is_deterministic_bit_for_bit():
    g = random_gaussians(3000)
    model = trained_model(g)
    for r in RATIOS:
        a, b = model.at_ratio(g, r), model.at_ratio(g, r)
        assert len(a) == kept_count(r, len(g))
        for x, y in zip(a.tensors(), b.tensors()):
            assert torch.equal(x, y)
    # and from a saved and reloaded model
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = ElasticModel(len(g), hidden=16)
    again.load_state_dict(torch.load(buf))
    for x, y in zip(model.at_ratio(g, 0.1).tensors(), again.at_ratio(g, 0.1).tensors()):
        assert torch.equal(x, y)


def test_kept_sets_are_nested_and_full_ratio_is_the_scene_unchanged():
    g = random_gaussians(2000, seed=2)
    model = trained_model(g, seed=3)
    order = model.order(g)
    kept = [set(top(order, r).tolist()) for r in sorted(RATIOS)]
    for small, large in zip(kept, kept[1:]):
        assert small <= large
    full = model.at_ratio(g, 1.0)
    for x, y in zip(full.tensors(), g.tensors()):
        assert torch.equal(x, y)
    # a reduced scene is transformed (the networks are not zero here): kept Gaussians move
    reduced = model.at_ratio(g, 0.25)
    keep = top(order, 0.25)
    assert not torch.equal(reduced.means, g.means[keep])
    assert torch.equal(reduced.sh0, g.sh0[keep])  # colour is not transformed


def test_table_is_piecewise_linear_in_log_r_and_zero_at_1():
    table = DeltaTable(4)
    assert table.weights(1.0) == []
    for j, knot in enumerate(KNOTS):
        assert table.weights(knot) == [(j, 1.0)]
    assert table.weights(0.001) == [(len(KNOTS) - 1, 1.0)]  # constant below the last knot
    (j0, w0), (j1, w1) = table.weights(math.sqrt(0.5 * 0.25))  # halfway in log r
    assert (j0, j1) == (0, 1) and w0 == pytest.approx(0.5) and w1 == pytest.approx(0.5)
    ((j, w),) = table.weights(math.sqrt(0.5))  # halfway between r = 1 (zero) and the first knot
    assert j == 0 and w == pytest.approx(0.5)
    with pytest.raises(ValueError, match="knots"):
        DeltaTable(4, (0.1, 0.5))


def test_table_transform_is_deterministic_nested_and_leaves_r_1_alone():
    g = random_gaussians(1500, seed=7)
    model = trained_model(g, seed=8, transform="table")
    order = model.order(g)
    kept = [set(top(order, r).tolist()) for r in sorted(RATIOS)]
    assert all(small <= large for small, large in zip(kept, kept[1:]))
    for x, y in zip(model.at_ratio(g, 1.0).tensors(), g.tensors()):
        assert torch.equal(x, y)
    for r in RATIOS[1:] + (0.3, 0.002):
        a, b = model.at_ratio(g, r), model.at_ratio(g, r)
        assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))
    # a Gaussian's change at r is its own rows' (colour too), whatever else is kept
    keep = top(order, 0.25)
    reduced = model.at_ratio(g, 0.25)
    d = model.transform.weight[len(g) * KNOTS.index(0.25) + keep] * model.transform.units
    assert torch.allclose(reduced.sh0[:, 0], g.sh0[keep, 0] + d[:, 11:14])
    assert torch.allclose(reduced.opacity_logits, g.opacity_logits[keep] + d[:, 10])
    assert torch.equal(reduced.shN, g.shN[keep])
    # saved and reloaded through the strategy's state, bit for bit
    from splatfield.scenes.strategies.elastic import elastic_model_from_state

    state = {"model": model.state_dict(), "hidden": 16, "transform": "table", "knots": KNOTS}
    again = elastic_model_from_state(state)
    assert all(torch.equal(x, y) for x, y in zip(reduced.tensors(), again.at_ratio(g, 0.25).tensors()))


def test_an_untrained_selector_ranks_by_importance_and_leaves_the_gaussians_as_they_are():
    # a toy scene where importance is known: Gaussian i has importance i (over 4 views)
    g = random_gaussians(500, seed=4)
    model = ElasticModel(len(g))
    model.fit_normalisation(g)
    model.importance.copy_(torch.arange(len(g), dtype=torch.float64) * 4)
    model.views_seen.fill_(4)
    for r in (0.5, 0.1, 0.01):
        k = kept_count(r, len(g))
        expected = torch.arange(len(g) - k, len(g))  # the k most important
        assert torch.equal(top(model.order(g), r), expected)
        reduced = model.at_ratio(g, r)
        for x, y in zip(reduced.tensors(), g.tensors()):
            if x.shape[-1] == 4:  # rotations come back normalised
                y = torch.nn.functional.normalize(y, dim=-1)
            assert torch.equal(x, y[expected])
    assert torch.equal(baseline_order("importance", g, model.importance)[:50], torch.arange(499, 449, -1))


def test_baselines_rank_as_they_say_and_nest():
    g = random_gaussians(400, seed=5)
    importance = torch.rand(400, generator=torch.Generator().manual_seed(6))
    by_opacity = baseline_order("opacity", g)
    assert bool((g.opacity_logits[by_opacity][:-1] >= g.opacity_logits[by_opacity][1:]).all())
    by_importance = baseline_order("importance", g, importance)
    assert bool((importance[by_importance][:-1] >= importance[by_importance][1:]).all())
    rnd = baseline_order("random", g, seed=0)
    assert torch.equal(rnd, baseline_order("random", g, seed=0)) and not torch.equal(rnd, baseline_order("random", g, seed=1))
    assert sorted(rnd.tolist()) == list(range(400))
    for method in RANKING_METHODS:
        order = baseline_order(method, g, importance)
        assert set(top(order, 0.1).tolist()) <= set(top(order, 0.5).tolist())
    with pytest.raises(ValueError, match="importance"):
        baseline_order("importance", g)


def test_a_model_refuses_a_scene_of_another_size():
    g = random_gaussians(100)
    model = trained_model(g)
    with pytest.raises(ValueError, match="100 Gaussians"):
        model.at_ratio(random_gaussians(99), 0.5)


# ---------------------------------------------------------------------------- the strategy in training

ELASTIC_STEPS = 120  # adc stops densifying at 70%: the elastic phase is steps 84..120


def _config(root, name: str, strategy, **options):
    from splatfield.scenes.options import run_config

    return run_config(str(root / "data"), str(root / name), strategy=strategy, steps=ELASTIC_STEPS, init_points=2000,
                      init_half_size=1.0, sh_degree=1, checkpoint_every=0, save_renders=False, eval=False,
                      **options)  # fmt: skip


def _train(root, name: str, strategy, on_step=None, **options):
    from splatfield.apps import training as tr

    return tr.train(_config(root, name, strategy, **options), on_step=on_step, log=lambda m: None)


@pytest.fixture(scope="module")
def elastic_runs(tmp_path_factory, native):
    from splatfield.data import procedural

    root = tmp_path_factory.mktemp("elastic")
    procedural.write_demo_dataset(root / "data", size=32, train_views=8, test_views=2)
    return (root, _train(root, "plain", ("adc",)), _train(root, "mlp", ("adc", "elastic"), elastic_transform="mlp"),
            _train(root, "table", ("adc", "elastic")))  # the table is the default transform


def _checkpoint(result) -> dict:
    from splatfield.scenes import checkpoint as ckpt

    return ckpt.load_checkpoint(result.checkpoint)


def test_the_elastic_phase_leaves_the_full_model_as_plain_adc_trains_it(elastic_runs):
    # the reduced renders train only the selector and transform: the scene is bit for bit
    # the plain adc run's (the same seed, the same batches)
    _, plain, elastic, table = elastic_runs
    a, b = _checkpoint(plain)["scene"]["params"], _checkpoint(elastic)["scene"]["params"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert torch.equal(a[name], _checkpoint(table)["scene"]["params"][name]), name
    state = _checkpoint(elastic)["strategies"][1]
    assert state["name"] == "elastic" and state["state"]["start"] == round(0.7 * ELASTIC_STEPS)
    model = state["state"]["model"]
    # every step of the phase added one view's importance, and the networks moved off zero
    assert int(model["views_seen"]) == ELASTIC_STEPS - state["state"]["start"] + 1
    assert float(model["importance"].sum()) > 0
    assert float(model["selector.4.weight"].abs().sum()) > 0 and float(model["transform.4.weight"].abs().sum()) > 0


@pytest.mark.parametrize("transform", ["mlp", "table"])
def test_selector_and_transform_survive_an_interrupted_run_bit_for_bit(elastic_runs, transform):
    import os
    import signal

    from splatfield.apps import training as tr

    root, _, straight_mlp, straight_table = elastic_runs
    straight = straight_table if transform == "table" else straight_mlp

    def interrupt_at_100(info) -> None:  # inside the elastic phase
        if info.step == 100:
            os.kill(os.getpid(), signal.SIGINT)

    name = f"interrupted-{transform}"
    first = _train(root, name, ("adc", "elastic"), on_step=interrupt_at_100, elastic_transform=transform)
    assert not first.finished and first.step == 100
    assert _checkpoint(first)["strategies"][1]["state"]["model"] is not None
    config = _config(root, name, ("adc", "elastic"), elastic_transform=transform)
    resumed = tr.train(config, resume=True, log=lambda m: None)
    assert resumed.finished
    a, b = _checkpoint(straight)["strategies"][1]["state"], _checkpoint(resumed)["strategies"][1]["state"]
    assert a["transform"] == b["transform"] == transform
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert torch.equal(a["generator"], b["generator"])
    for opt in ("optimizer", "table_optimizer"):
        if transform == "mlp" and opt == "table_optimizer":
            assert a[opt] is None and b[opt] is None
            continue
        assert a[opt]["state"]
        for k, s in a[opt]["state"].items():
            assert torch.equal(s["exp_avg"], b[opt]["state"][k]["exp_avg"]), k
            assert torch.equal(s["exp_avg_sq"], b[opt]["state"][k]["exp_avg_sq"]), k
    if transform == "table":  # the table learnt, only in the rows of kept Gaussians at the knots drawn
        w = a["model"]["transform.weight"]
        assert 0 < int((w.abs().sum(dim=1) > 0).sum()) < w.shape[0]
