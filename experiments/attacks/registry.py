"""The competitors' registry: one name per scheme, one ``build`` that checks names and hyper-parameters.

A scheme registers a factory ``(surrogates, **hparams) -> Attack`` (an
:class:`~erasablemask.experiments.attacks.base.Attack` dataclass itself is
such a factory)::

    @register("fgsm")
    @dataclass(eq=False)
    class FGSM(Attack): ...

    attack = build("fgsm", surrogates, eps=4 / 255)
    x_adv = attack(x, x_target)

The allowed hyper-parameters of a factory are its keyword parameters after
the first (``surrogates``), read from its signature; a factory that takes
``**kwargs`` checks its own. ``build`` refuses an unknown name
(``LookupError`` listing the registered ones) and an unknown hyper-parameter
(``ValueError`` naming it and the allowed ones) before anything is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import nn

__all__ = ["register", "build", "names", "allowed_hparams", "factory_keywords"]

Factory = Callable[..., Any]
F = TypeVar("F", bound=Factory)

_REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[F], F]:
    """Decorator registering ``factory`` under ``name`` (lower case, unique).

    Raises:
        ValueError: ``name`` is empty, not lower case, or already registered to another factory.
    """
    if not name or name != name.lower() or not name.replace("_", "").isalnum():
        raise ValueError(f"attack name {name!r} must be a non-empty lower-case identifier (e.g. 'pgd')")

    def deco(factory: F) -> F:
        old = _REGISTRY.get(name)
        if old is not None and getattr(old, "__qualname__", None) != getattr(factory, "__qualname__", None):
            raise ValueError(f"attack name '{name}' is already registered to {old!r}; choose another name")
        _REGISTRY[name] = factory
        return factory

    return deco


def names() -> list[str]:
    """The registered attack names, sorted."""
    return sorted(_REGISTRY)


def _factory(name: str) -> Factory:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LookupError(f"unknown attack '{name}'; registered attacks: {', '.join(names())}") from None


def allowed_hparams(name: str) -> tuple[str, ...] | None:
    """The hyper-parameter names ``build(name, ...)`` accepts; None when the factory takes ``**kwargs``.

    Raises:
        LookupError: ``name`` is not registered.
    """
    factory = _factory(name)
    hp = getattr(factory, "hparam_names", None)
    if callable(hp):
        return tuple(hp())
    params = list(inspect.signature(factory).parameters.values())[1:]  # after `surrogates`
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(
        p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def factory_keywords(name: str) -> tuple[str, ...]:
    """Every named parameter of ``name``'s factory after ``surrogates`` (hyper-parameters and resources such as
    ``cfg`` or ``generator``, whether or not it also takes ``**kwargs``).

    Raises:
        LookupError: ``name`` is not registered.
    """
    params = list(inspect.signature(_factory(name)).parameters.values())[1:]
    return tuple(
        p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def build(name: str, surrogates: Sequence[nn.Module], **hparams: Any) -> Any:
    """The attack ``name`` against ``surrogates`` with ``hparams`` over its defaults.

    Args:
        name: a registered name (:func:`names`).
        surrogates: the white-box FR models (FaceRecognizer) the attack may query.
        **hparams: hyper-parameters by field name (see the attack's class for units and defaults).

    Returns:
        The :class:`~erasablemask.experiments.attacks.base.Attack`.

    Raises:
        LookupError: ``name`` is not registered.
        ValueError: a hyper-parameter is not one of the attack's, or a value is out of range.
    """
    factory = _factory(name)
    allowed = allowed_hparams(name)
    if allowed is not None:
        unknown = sorted(set(hparams) - set(allowed))
        if unknown:
            raise ValueError(
                f"attack '{name}' has no hyper-parameter {', '.join(unknown)}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )
    return factory(list(surrogates), **hparams)
