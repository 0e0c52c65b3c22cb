"""The attacks: ErasableMask's meta-auxiliary attack (:mod:`.meta_auxiliary`) and the competitors' registry.

``build(name, surrogates, **hparams)`` returns a competitor, a
:class:`~erasablemask.experiments.attacks.base.Attack` (a ``Protection``
called as ``attack(x, x_target)``); ``names()`` lists them. Importing this
package imports each competitor's module so that it registers itself; a new
scheme adds its module to the import list below.
"""

from erasablemask.experiments.attacks.registry import build, names, register

# Each module registers its scheme on import (one line per module).
from erasablemask.experiments.attacks import fgsm, pgd  # noqa: E402,F401  isort: skip
from erasablemask.experiments.attacks import semanticadv, sibling  # noqa: E402,F401  isort: skip
from erasablemask.experiments.attacks import erasablemask_adapter  # noqa: E402,F401  isort: skip
from erasablemask.experiments.attacks import advfaces, gmaa  # noqa: E402,F401  isort: skip

__all__ = ["build", "names", "register"]
