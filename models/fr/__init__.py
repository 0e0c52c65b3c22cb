"""Face-recognition zoo: one wrapper, one registry, one weights resolver, thresholds keyed by weights.

    >>> from erasablemask.models import fr
    >>> model = fr.build("ir152", weights="ir152.pth")   # published thresholds, or calibrated ones for these weights

Mini-world models (``mini_*``) are trained by the experiments layer and
built from the file it computes for a given world
(``experiments.fr_tools.mini_zoo.build_mini_model(name, world)``).
"""

# The public names are the registry's (its ``__all__``): the wrapper, specs, build and the
# calibration and weights helpers it re-exports.
from erasablemask.models.fr.registry import *  # noqa: F403
from erasablemask.models.fr.registry import __all__  # noqa: F401
