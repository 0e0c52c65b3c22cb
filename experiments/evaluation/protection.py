"""The ``Protection`` interface: the one seam between a protection scheme and everything that scores it.

Evaluation, ``compare``, ``protect``/``erase`` and the report know a scheme
only through this class (DESIGN.md, "Seams"). ErasableMask implements it
(:mod:`~erasablemask.experiments.evaluation.erasablemask_protection`); the
competitors (FGSM, PGD, Sibling, AdvFaces, SemanticAdv, GMAA) will too, as
thin adapters of their ``attack(x, x_target)``.

The contract, stated once (STYLE.md: range confusion is the most-reported
bug of attack libraries):

- images are ``(N, 3, H, W)`` float tensors in ``[-1, 1]``, RGB, on the
  scheme's device; the public methods check this at the boundary, on the way
  in and on the way out, and name the scheme in the error;
- attributes are the 13 AttGAN attributes as 0/1 labels ``(N, 13)``
  (``att_a``: the source's, ``att_b``: the requested edit); a scheme that
  needs another coding converts them itself;
- ``x_target`` holds one face of the target identity per sample, row ``i``
  for sample ``i`` (the target's *training* photo: the one the attack may
  see; success is judged against another photo of the target);
- what ``protect`` returns is what gets scored: a scheme that publishes
  quantised (8-bit) images quantises before returning;
- callers may hold ``torch.no_grad()``: a scheme that needs gradients (an
  attack) enables them itself (``with torch.enable_grad():``). Returned
  tensors are detached.

Subclasses implement :meth:`Protection._protect` and, where the scheme has
them, :meth:`Protection._attribute_only` (the "Attributes Modified" baseline
of Table II: the same edit without protection) and :meth:`Protection._erase`
(setting ``can_erase = True``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor

from erasablemask.models.image_checks import check_image_range

__all__ = ["Protection"]


class Protection(ABC):
    """A facial-privacy protection scheme: clean faces + target -> protected faces (and back, if it can).

    Attributes:
        name: short lower-case identifier, used as ``method`` in the
            per-sample records (``"erasablemask"``, ``"fgsm"``, ...).
        can_erase: whether :meth:`erase` is supported (a trusted authority can
            remove the protection before verification).
    """

    name: str = ""
    can_erase: bool = False

    def protect(self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None = None,
                att_b: Tensor | None = None) -> Tensor:
        """Protect clean faces so that FR models verify them as the target identity.

        Args:
            x: clean faces ``(N, 3, H, W)`` in [-1, 1].
            x_target: the target identity's face for each sample, ``(N, 3, H', W')`` in [-1, 1]
                (schemes trained for fixed targets, like ErasableMask, may ignore it).
            att_a: ``(N, 13)`` 0/1 attributes of ``x`` (schemes that edit attributes).
            att_b: ``(N, 13)`` 0/1 requested attributes (schemes that edit attributes).

        Returns:
            Protected faces ``(N, 3, H, W)`` in [-1, 1], detached: exactly what gets scored.

        Raises:
            ValueError: an input or the scheme's output is not a batch of images in [-1, 1],
                ``x_target`` has another batch size, or a needed attribute is missing.
        """
        check_image_range(x, f"{self._label}: x")
        check_image_range(x_target, f"{self._label}: x_target")
        if x_target.shape[0] != x.shape[0]:
            raise ValueError(f"{self._label}: x_target has {x_target.shape[0]} faces for {x.shape[0]} sources; "
                             f"pass one target face per source (index the target photos by sample)")
        self._check_attributes(x, att_a, att_b)
        return self._checked_output(self._protect(x, x_target, att_a=att_a, att_b=att_b), x, "protect")

    def attribute_only(self, x: Tensor, *, att_a: Tensor | None = None, att_b: Tensor | None = None) -> Tensor | None:
        """The same attribute edit without protection (Table II's "Attributes Modified"), or None.

        Args:
            x: clean faces ``(N, 3, H, W)`` in [-1, 1].
            att_a: ``(N, 13)`` 0/1 attributes of ``x``.
            att_b: ``(N, 13)`` 0/1 requested attributes.

        Returns:
            ``(N, 3, H, W)`` in [-1, 1], detached; None for schemes that do not edit attributes.
        """
        check_image_range(x, f"{self._label}: x")
        self._check_attributes(x, att_a, att_b)
        out = self._attribute_only(x, att_a=att_a, att_b=att_b)
        return None if out is None else self._checked_output(out, x, "attribute_only")

    def erase(self, x_protected: Tensor, *, att_a: Tensor | None = None, att_b: Tensor | None = None) -> Tensor:
        """Remove the protection (the trusted authority's restorer), where the scheme can.

        Args:
            x_protected: protected faces ``(N, 3, H, W)`` in [-1, 1], possibly transformed
                (JPEG, noise, ...) after :meth:`protect`.
            att_a: ``(N, 13)`` 0/1 source attributes (only schemes whose restorer is told them).
            att_b: ``(N, 13)`` 0/1 requested attributes (likewise).

        Returns:
            Restored faces ``(N, 3, H, W)`` in [-1, 1], detached.

        Raises:
            NotImplementedError: the scheme cannot erase (``can_erase`` is False).
        """
        if not self.can_erase:
            raise NotImplementedError(f"{self._label} cannot erase its protection (can_erase is False); "
                                      f"score its protected faces without restoration")
        check_image_range(x_protected, f"{self._label}: x_protected")
        self._check_attributes(x_protected, att_a, att_b)
        return self._checked_output(self._erase(x_protected, att_a=att_a, att_b=att_b), x_protected, "erase")

    # ------------------------------------------------------------------ what a scheme implements

    @abstractmethod
    def _protect(self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        """The scheme's protection; inputs already checked (see :meth:`protect`)."""

    def _attribute_only(self, x: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor | None:
        """The scheme's attribute-only edit; None (the default) for schemes that do not edit attributes."""
        return None

    def _erase(self, x_protected: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        """The scheme's erasion; only called when ``can_erase`` is True."""
        raise NotImplementedError(f"{self._label} sets can_erase but does not implement _erase")

    # ------------------------------------------------------------------ boundary checks

    @property
    def _label(self) -> str:
        return f"protection '{self.name or type(self).__name__}'"

    def _check_attributes(self, x: Tensor, att_a: Tensor | None, att_b: Tensor | None) -> None:
        for key, att in (("att_a", att_a), ("att_b", att_b)):
            if att is None:
                continue
            if att.ndim != 2 or att.shape[0] != x.shape[0]:
                raise ValueError(f"{self._label}: {key} must be (N, n_attributes) 0/1 labels with N={x.shape[0]}; "
                                 f"got shape {tuple(att.shape)}")
            if not bool(((att == 0) | (att == 1)).all()):
                raise ValueError(f"{self._label}: {key} must hold 0/1 labels (the scheme codes them itself); "
                                 f"got values in [{float(att.min()):g}, {float(att.max()):g}]")

    def _checked_output(self, out: Tensor, like: Tensor, what: str) -> Tensor:
        check_image_range(out, f"{self._label}: output of {what}")
        if out.shape != like.shape:
            raise ValueError(f"{self._label}: {what} returned shape {tuple(out.shape)} for input "
                             f"{tuple(like.shape)}; a protection must keep the image size")
        return out.detach()
