"""Image quality of protection and erasion: mean L1 and MSE in [0, 1] pixel units (Table VI).

Accumulated batch by batch from the images the validator already computed
(:class:`~erasablemask.experiments.evaluation.validator.ProtectedBatch`), so
a scheme protects each face once per evaluation. Keys:

- ``quality/l1_protected_vs_attr_only``, ``quality/mse_protected_vs_attr_only``:
  the protected face against the scheme's attribute-only edit (what the
  perturbation adds on top of the edit; schemes that edit attributes);
- ``quality/l1_restored_vs_source``, ``quality/mse_restored_vs_source``:
  the restored face against the clean source (schemes that erase).
"""

from __future__ import annotations

from erasablemask.experiments.evaluation.validator import ProtectedBatch

__all__ = ["ImageQuality"]


class ImageQuality:
    """Per-image mean L1 / MSE, averaged over images; feed it every batch with :meth:`add`."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, out: ProtectedBatch) -> None:
        """Accumulate one batch (the pairs that exist for the scheme)."""
        pairs = {"protected_vs_attr_only": (out.protected, out.attribute_only),
                 "restored_vs_source": (out.restored, out.x)}
        for key, (p, q) in pairs.items():
            if p is None or q is None:
                continue
            d = (p - q).float() / 2  # [0, 1] units
            for name, per_image in (("l1", d.abs().mean(dim=(1, 2, 3))), ("mse", d.square().mean(dim=(1, 2, 3)))):
                k = f"quality/{name}_{key}"
                self.sums[k] = self.sums.get(k, 0.0) + float(per_image.sum())
                self.counts[k] = self.counts.get(k, 0) + int(per_image.numel())

    def result(self) -> dict[str, float]:
        """Mean per key over the images added."""
        return {k: v / self.counts[k] for k, v in self.sums.items()}
