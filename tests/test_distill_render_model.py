"""VSD/ESD's second model (issue 17): the guidance's UNet adapted online to the renders
(LoRA or a copy), camera-conditioned, starting as the guidance and leaving it untouched."""

from __future__ import annotations

import pytest
import torch

from splatfield.scenes.distill import DiffusersGuidance, RenderModel, distillation_loss, variational_gradient

from .test_distill_diffusers import save_checkpoint

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("tiny-sd"))


def cameras(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))[0]
    return torch.cat([q, torch.randn(n, 3, 1, generator=g)], -1)  # [n, 3, 4] camera-to-world


def batch(seed: int, n: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 1000, (n,), generator=g)


@pytest.mark.parametrize("adapter", ["lora", "copy"])
def test_adapted_model_starts_as_the_guidance_and_learns_without_touching_it(checkpoint, adapter):
    guidance = DiffusersGuidance(checkpoint)
    base = {k: v.clone() for k, v in guidance.unet.state_dict().items()}
    x_t, t = batch(0)
    before = guidance.predict_noise(x_t, t)
    model = RenderModel(guidance, adapter=adapter, rank=4, lr=3e-2, generator=torch.Generator().manual_seed(1))
    cams = cameras(4, 2)
    torch.testing.assert_close(model.predict_noise(x_t, t, cams), before, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.predict_noise(x_t, t, None), before, rtol=0, atol=1e-6)
    torch.testing.assert_close(guidance.predict_noise(x_t, t), before, rtol=0, atol=0)  # adding the adapter changed nothing

    # Renders that depend on their camera: a colour per camera. The adapted model must fit them better.
    renders = torch.stack([torch.full((3, 16, 16), float(v)) for v in (-0.8, -0.3, 0.3, 0.8)])
    g = torch.Generator().manual_seed(3)
    probe_t = torch.randint(50, 950, (64,), generator=g)
    probe_eps = torch.randn(64, 3, 16, 16, generator=g)
    probe_x = renders.repeat(16, 1, 1, 1)
    probe_cams = cams.repeat(16, 1, 1)

    def denoising_error() -> float:
        x_t = guidance.schedule.add_noise(probe_x, probe_t, probe_eps)
        return float((model.predict_noise(x_t, probe_t, probe_cams) - probe_eps).square().mean())

    start = denoising_error()
    for _ in range(40):
        model.train_step(renders, cams)
    end = denoising_error()
    print(f"{adapter}: denoising error of the renders {start:.3f} -> {end:.3f} in 40 steps")
    assert end < 0.85 * start, (start, end)
    if adapter == "lora":
        # every self-attention update trained; cross-attention attends to the zero embedding
        # of no condition here (zero keys and values, bias-free): its four get no gradient
        trained = [bool(layer.up.weight.abs().sum() > 0) for layer in model.lora]
        assert trained == ([True] * 4 + [False] * 4) * (len(trained) // 8), trained  # attn1, attn2 of each block
    # The guidance is exactly the pretrained model still: weights and predictions.
    assert all(torch.equal(base[k], v) for k, v in guidance.unet.state_dict().items() if k in base)
    torch.testing.assert_close(guidance.predict_noise(x_t, t), before, rtol=0, atol=0)
    trainable = {id(p) for p in guidance.unet.parameters() if p.requires_grad}
    assert trainable <= {id(p) for p in model.parameters} and (adapter == "lora") == bool(trainable)


def test_vsd_with_the_adapted_model_reaches_the_render_only(checkpoint):
    guidance = DiffusersGuidance(checkpoint)
    model = RenderModel(guidance, rank=2, generator=torch.Generator().manual_seed(0))
    theta = torch.zeros(2, 3, 16, 16, requires_grad=True)
    x = torch.tanh(theta + 0.1)
    g = torch.Generator().manual_seed(4)
    t, eps = torch.tensor([300, 600]), torch.randn(2, 3, 16, 16, generator=g)
    model.train_step(x, cameras(2, 5))
    grad = variational_gradient(guidance, model, x, t, eps, camera=cameras(2, 5), entropy_weight=0.5)
    distillation_loss(x, grad).backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0
    assert all(p.grad is None for p in guidance.unet.parameters() if not p.requires_grad)  # the frozen weights


def test_the_adapted_model_round_trips_its_state(checkpoint):
    guidance = DiffusersGuidance(checkpoint)
    a = RenderModel(guidance, rank=2, generator=torch.Generator().manual_seed(0))
    renders, cams = torch.randn(3, 3, 16, 16), cameras(3, 6)
    for _ in range(3):
        a.train_step(renders, cams)
    saved = a.state_dict()
    other = DiffusersGuidance(checkpoint)
    b = RenderModel(other, rank=2, generator=torch.Generator().manual_seed(0))
    b.load_state_dict(saved)
    x_t, t = batch(7, 3)
    torch.testing.assert_close(b.predict_noise(x_t, t, cams), a.predict_noise(x_t, t, cams), rtol=0, atol=0)
    with pytest.raises(ValueError, match="another UNet or adapter"):
        RenderModel(DiffusersGuidance(checkpoint), rank=3).load_state_dict(saved)
