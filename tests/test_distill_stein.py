"""The Stein control variate as lift uses it (``--distill.estimator stein``,
scenes/distill/stein.py): the coefficient is fitted per timestep band from earlier draws
only, so the gradient keeps SDS's mean, and its variance drops where the denoiser leaves
the injected noise in SDS's gradient. Exact Gaussian prior, float64."""

from __future__ import annotations

import math

import pytest
import torch

from splatfield.scenes.config import ConfigError
from splatfield.scenes.distill import GaussianMixture, NoiseSchedule, sds_gradient
from splatfield.scenes.distill.stein import FittedControlVariate, constant_baseline
from splatfield.scenes.strategies.options import DistillConfig

DT = torch.float64
SCHEDULE = NoiseSchedule.from_betas("scaled_linear")


class IsotropicMixture:
    """Two equal Gaussians N(+-m, s^2 I) in D dimensions, exact and cheap at any D (the
    analytic GaussianMixture builds D x D covariances): a nonlinear denoiser, so the
    control variate cannot remove all of SDS's variance."""

    def __init__(self, m, s):
        self.schedule, self.m, self.s2 = SCHEDULE, m, s * s

    def predict_noise(self, x_t, t, condition=None):
        a, sig = (v.to(DT)[:, None] for v in (SCHEDULE.alpha(t), SCHEDULE.sigma(t)))
        var = a * a * self.s2 + sig * sig
        d = torch.stack([x_t - a * self.m, x_t + a * self.m])  # [2, B, D]
        r = torch.softmax(-0.5 * d.square().sum(-1) / var.T, 0)[..., None]  # responsibilities
        return sig * (r * d).sum(0) / var


def _draws(prior, x0, t_value, n, g):
    x, t = x0.expand(n, -1), torch.full((n,), t_value)
    eps = torch.randn(x.shape, generator=g, dtype=DT)
    return sds_gradient(prior, x, t, eps), SCHEDULE.add_noise(x, t, eps), eps, SCHEDULE.sigma(t).to(DT), t


# measured factors 1.27 at t 150 and 1.01 at t 850 (the denoiser cancels nearly all of eps at
# high noise: there the control variate has nothing left to remove and must do no harm)
@pytest.mark.parametrize("t_value, least", [(150, 1.15), (850, 0.99)])
def test_fitted_coefficient_keeps_the_mean_and_lowers_the_variance(t_value, least):
    g = torch.Generator().manual_seed(3)
    D = 2048  # a render's size matters: <g_mean, eps> / |eps|^2, the fit's noise, shrinks as 1/sqrt(D)
    # a narrow prior: at low noise the denoiser removes little of eps, so SDS carries it
    prior = IsotropicMixture(torch.randn(D, generator=g, dtype=DT) * 0.05, 0.1)
    x0 = torch.randn(1, D, generator=g, dtype=DT) * 0.1
    stein = FittedControlVariate(SCHEDULE.steps, bands=10, decay=0.999)
    for _ in range(200):  # fitting: one draw per step, as in a lift
        stein.apply(*_draws(prior, x0, t_value, 1, g))
    mu = float(stein.coefficient(torch.tensor([t_value])))
    grad, x_t, eps, sigma, t = _draws(prior, x0, t_value, 4000, g)
    # the optimal coefficient for cv = eps, measured on this fresh set
    best = -float((grad * eps).sum() / eps.square().sum())
    assert abs(mu - best) < 0.1 * abs(best), (mu, best)
    frozen = FittedControlVariate(SCHEDULE.steps, bands=10, decay=0.999)
    frozen.load_state_dict(stein.state_dict())
    out = frozen.apply(grad, x_t, eps, sigma, t)
    factor = float(grad.var(0).sum() / out.var(0).sum())
    print(f"t={t_value}: mu {mu:.4f} (best {best:.4f}), variance lowered {factor:.2f}x")
    assert factor > least
    se = (out - grad).std(0) / math.sqrt(grad.shape[0])
    assert ((out - grad).mean(0).abs() < 5 * se).all()  # the mean is SDS's: the control variate averages to zero


def test_the_coefficient_comes_from_earlier_draws_only():
    """The first draw of a band gets mu = 0 (nothing seen yet): the gradient is SDS's exactly."""
    g = torch.Generator().manual_seed(4)
    prior = GaussianMixture(SCHEDULE, torch.ones(1, dtype=DT), torch.zeros(1, 4, dtype=DT), torch.eye(4, dtype=DT)[None])
    stein = FittedControlVariate(SCHEDULE.steps, bands=4)
    grad, x_t, eps, sigma, t = _draws(prior, torch.zeros(1, 4, dtype=DT), 900, 1, g)
    assert torch.equal(stein.apply(grad, x_t, eps, sigma, t), grad)
    assert float(stein.coefficient(torch.tensor([900]))) != 0.0
    assert float(stein.coefficient(torch.tensor([100]))) == 0.0  # another band learnt nothing


def test_constant_baseline_gives_the_noise_as_control_variate():
    from splatfield.scenes.distill import stein_control_variate

    g = torch.Generator().manual_seed(5)
    x_t, eps = torch.randn(3, 5, generator=g, dtype=DT), torch.randn(3, 5, generator=g, dtype=DT)
    cv = stein_control_variate(constant_baseline, x_t, eps, torch.full((3,), 0.7, dtype=DT))
    assert torch.equal(cv, eps)


def test_stein_options_are_checked():
    with pytest.raises(ConfigError, match="stein-bands"):
        DistillConfig(stein_bands=0)
    with pytest.raises(ConfigError, match="stein-decay"):
        DistillConfig(stein_decay=1.0)
    with pytest.raises(ValueError):
        FittedControlVariate(1000, bands=0)


# ---------------------------------------------------------------- SteinDreamer's depth-agreement baseline


def save_depth_model(root):
    """A tiny random DPT (transformers' depth-estimation layout) saved to ``root``."""
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(7)
    DPTForDepthEstimation(DPTConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                                    image_size=16, patch_size=4, backbone_out_indices=[0, 1, 2, 3],
                                    neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8,
                                    reassemble_factors=[4, 2, 1, 0.5])).save_pretrained(root)  # fmt: skip
    return root


def test_depth_model_folder_loads_and_bad_folders_are_one_line(tmp_path):
    from splatfield.scenes.distill.depth_agreement import DepthEstimator, DepthModelError

    estimator = DepthEstimator(save_depth_model(tmp_path / "dpt"))
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = estimator(images)
    assert out.shape == (2, 16, 16)
    (grad,) = torch.autograd.grad(out.sum(), images)
    assert grad.abs().sum() > 0 and not any(p.requires_grad for p in estimator.model.parameters())
    with pytest.raises(DepthModelError, match="no such folder"):
        DepthEstimator(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(DepthModelError, match="missing model.safetensors"):
        DepthEstimator(tmp_path / "half")


def test_depth_agreement_control_variate_is_zero_mean(tmp_path):
    """phi = corr(D(x_t / alpha_t as an image), the render's disparity): a nonlinear baseline
    through a network; its control variate still averages to zero over the noise."""
    from splatfield.scenes.distill import stein_control_variate
    from splatfield.scenes.distill.depth_agreement import DepthEstimator, depth_agreement, render_disparity

    estimator = DepthEstimator(save_depth_model(tmp_path / "dpt"))
    g = torch.Generator().manual_seed(8)
    n = 4000
    x = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    alpha_map = torch.rand(1, 16, 16, 1, generator=g)
    depth = alpha_map * (2 + torch.rand(1, 16, 16, 1, generator=g))
    disparity = render_disparity(alpha_map, depth).expand(n, -1, -1)
    t = torch.full((n,), 300)
    a, sigma = SCHEDULE.alpha(t).float().view(-1, 1, 1, 1), SCHEDULE.sigma(t).float()
    eps = torch.randn(n, 3, 16, 16, generator=g)
    x_t = SCHEDULE.add_noise(x.expand(n, -1, -1, -1), t, eps).float()
    phi = depth_agreement(estimator, lambda y: (y / a + 1) / 2, disparity)
    cv = stein_control_variate(phi, x_t, eps, sigma).double()
    se = cv.std(0) / math.sqrt(n)
    z = (cv.mean(0) / se).flatten()
    assert z.abs().max() < 5.0, float(z.abs().max())  # 768 values: |z| < 5 for each if zero-mean
    assert cv.abs().mean() > 1e-3  # not zero by construction: phi varies with the noise
