"""Face-recognition zoo: one wrapper, one registry.

    >>> from erasablemask.models import fr
    >>> model = fr.build("mini_iresnet_s0")
"""

from erasablemask.models.fr.registry import (
    RANDOM_INIT,
    FaceRecognizer,
    FRSpec,
    Preprocessing,
    UncalibratedError,
    WeightsSource,
    WeightsUnavailable,
    available,
    build,
    cache_dir,
    get_spec,
    read_calibration,
    register,
    weights_home,
)

__all__ = [
    "RANDOM_INIT",
    "FaceRecognizer",
    "FRSpec",
    "Preprocessing",
    "UncalibratedError",
    "WeightsSource",
    "WeightsUnavailable",
    "available",
    "build",
    "cache_dir",
    "get_spec",
    "read_calibration",
    "register",
    "weights_home",
]
