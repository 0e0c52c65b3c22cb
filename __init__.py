"""erasablemask: a Ray-based research platform reproducing ErasableMask.

The repository root *is* the import package ``erasablemask`` (see DESIGN.md):
``models``, ``experiments``, ``platform`` and ``analysis`` are its sub-packages.
``platform/`` deliberately has no ``__init__.py`` so that it never shadows
Python's standard ``platform`` module.
"""

__version__ = "0.1.0"
