"""Imports every module that registers FR models (one line per module)."""

# Each import registers its models with erasablemask.models.fr.registry.
from erasablemask.models.fr import (
    mini_zoo,  # noqa: F401
    paper_zoo,  # noqa: F401
    real_models,  # noqa: F401
)
