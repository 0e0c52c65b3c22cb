"""Face-recognition zoo: one wrapper, one registry.

    >>> from erasablemask.models import fr
    >>> model = fr.build("mini_iresnet_s0")
"""

from erasablemask.models.fr.registry import (
    FaceRecognizer,
    FRSpec,
    Preprocessing,
    UncalibratedError,
    WeightsSource,
    available,
    build,
    cache_dir,
    get_spec,
    register,
)

__all__ = [
    "FaceRecognizer",
    "FRSpec",
    "Preprocessing",
    "UncalibratedError",
    "WeightsSource",
    "available",
    "build",
    "cache_dir",
    "get_spec",
    "register",
]
