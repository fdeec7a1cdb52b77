"""Training strategies: small objects with explicit state and hooks (see ``base``).

The options live in the torch-free :mod:`.options`; the strategies in :mod:`.adc` and
:mod:`.steepest`; :mod:`.registry` builds them by name. This package's import stays light
(the command line imports the options before it knows whether torch is needed).
"""

from .options import AdcConfig, SplitCriterion, SteepestConfig, StrategyName

__all__ = ["AdcConfig", "SplitCriterion", "SteepestConfig", "StrategyName"]
