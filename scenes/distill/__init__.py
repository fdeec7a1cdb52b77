"""Score distillation (the ``distill`` strategy, METHODS.md §4): a 2D diffusion prior
pushes renders of a scene toward what it finds likely.

- :mod:`.schedule` — the noise schedule ``x_t = alpha_t x + sigma_t eps``;
- :mod:`.guidance` — the ``Guidance`` interface (``predict_noise``) and classifier-free
  guidance;
- :mod:`.analytic` — exact priors (point mass, Gaussian, Gaussian mixture) and a Gaussian
  fit of a set of renders, for tests and for the variational model of the toy problems;
- :mod:`.diffusers_guidance` — a diffusers checkpoint from a local folder (Stable
  Diffusion's layout, our own prior's, or Zero-1-to-3's through :mod:`.zero123`);
- :mod:`.render_model` — VSD/ESD's second model: the guidance's UNet adapted online (LoRA
  or a copy) to the current renders, camera-conditioned;
- :mod:`.estimators` — the gradients on a render: SDS, VSD/ESD, the Stein control variate,
  and the loss that hands any of them to autograd;
- :mod:`.stein` — the control variate as a lift uses it: its coefficient fitted online.
"""

from .analytic import GaussianMixture, RenderGaussians, fit_gaussian, point_mass
from .diffusers_guidance import DiffusersGuidance, GuidanceError
from .estimators import (
    Weighting,
    distillation_loss,
    sds_gradient,
    stein_control_variate,
    variational_gradient,
)
from .guidance import Guidance, classifier_free
from .render_model import RenderModel
from .schedule import NoiseSchedule

__all__ = [
    "DiffusersGuidance", "GaussianMixture", "Guidance", "GuidanceError", "RenderGaussians", "RenderModel", "NoiseSchedule", "Weighting", "classifier_free", "distillation_loss", "fit_gaussian",
    "point_mass", "sds_gradient", "stein_control_variate", "variational_gradient",
]  # fmt: skip
