"""ErasableMask's generator and restorer (paper §IV-B, §IV-C; Eq. 6-7, 13; Fig. 3).

- :class:`PerturbationEncoder` ``E_adv``: ``G_enc``'s structure, initialised
  from ``G_enc``, trainable.
- :class:`ErasableMaskGenerator`: frozen AttGAN ``G`` + ``E_adv``. Per encoder
  layer ``fs_i = β·ft_i + (1-β)·perb_i`` (Eq. 6), both computed from the clean
  input; ``x_adv = G_dec([fs_1..fs_n], att_b)`` (Eq. 7) with clean-domain
  information injection (§IV-C): the clean branch ``G_dec(G_enc(x), att_b)``
  is decoded beside it and fused into it after each decoder layer with weight γ.
- :class:`Restorer` ``R``: ``G``'s structure, initialised from ``G``,
  ``x_rec = R(x_adv)`` (Eq. 13).

Decisions where the paper is silent (each is a constructor option):

- ``gamma_weights="clean"`` (default): ``h_adv ← γ·h_clean + (1-γ)·h_adv``; the
  ablation (§V-G-2: larger γ → better erasion and quality, lower ASR) fits γ
  weighting the clean branch. ``"adversarial"`` swaps the roles of γ and 1-γ.
- Fusion point: the output of each decoder block (transposed conv, BN, ReLU),
  before the shortcut/inject concatenation; the adversarial branch keeps its
  own shortcut ``fs``. The clean branch is not altered (it is exactly
  ``x_cov^{att_b}``, which ``L_perb`` (Eq. 8) needs, so it costs nothing extra).
  The last block's output is the image; it is fused only with ``fuse_image=True``
  (default False: "feature fusion" means the hidden layers).
- "A copy of G_dec": G_dec is frozen in stage 2, so the copy is the same frozen
  module applied twice (identical weights, no extra memory).
- ``E_adv``'s BatchNorm (``perturbation_bn``): "batch" (default, a trainable
  module in train mode uses batch statistics) or "frozen" (running statistics
  copied from G_enc are kept; the affine parameters still train).
- The restorer's attribute input at use time: a trusted authority sees only
  ``x_adv``, so the default is ``"neutral"`` (all-zero code = 'unknown' under
  ±0.5 coding) and R must recover ``x_cov^{att_a}`` from the image alone;
  ``"source"`` (oracle att_a) is an upper bound for ablations, ``"target"``
  uses att_b (if the TA is told the edit).

Frozen parts: ``G`` (G_enc, G_dec) has ``requires_grad=False`` and stays in
eval mode whatever ``.train()`` is called with. Images are ``(N, 3, H, W)``
in ``[-1, 1]``; attribute codes ``(N, n_attrs)`` already coded (±0.5).
"""

from __future__ import annotations

import copy
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from erasablemask.models.attgan import AttGANGenerator, check_attribute_code
from erasablemask.models.image_checks import check_image_range

__all__ = ["PerturbationEncoder", "ErasableMaskGenerator", "ProtectOutput", "Restorer", "restorer_code"]


def _check_unit(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1]; got {value}")
    return float(value)


class PerturbationEncoder(nn.Module):
    """``E_adv``: a trainable copy of ``G_enc`` (same layers, same parameter names ``enc_layers.*``).

    Build it with :meth:`from_generator`. ``forward(x)`` returns every layer's
    map ``[perb_1, ..., perb_n]`` of ``x`` ((N, 3, H, W) in [-1, 1]).
    """

    def __init__(self, enc_layers: nn.ModuleList) -> None:
        super().__init__()
        self.enc_layers = enc_layers

    @classmethod
    def from_generator(cls, generator: AttGANGenerator) -> PerturbationEncoder:
        """A trainable deep copy of ``generator.enc_layers`` (§IV-B: E_adv starts as G_enc)."""
        encoder = cls(copy.deepcopy(generator.enc_layers))
        encoder.requires_grad_(True)
        return encoder

    def forward(self, x: Tensor) -> list[Tensor]:
        check_image_range(x, "x")
        perbs = []
        for layer in self.enc_layers:
            x = layer(x)
            perbs.append(x)
        return perbs


class ProtectOutput(NamedTuple):
    """What :meth:`ErasableMaskGenerator.protect` returns (all (N, 3, H, W) in [-1, 1]).

    Attributes:
        x_adv: the protected face ``x_adv^{att_b}`` (Eq. 7, with injection if enabled).
        x_cov_b: the attribute-only edit ``x_cov^{att_b} = G_dec(G_enc(x), att_b)``
            (Eq. 8's reference), from the same G_enc features. No gradient to E_adv.
    """

    x_adv: Tensor
    x_cov_b: Tensor


class ErasableMaskGenerator(nn.Module):
    """Protected-face generator: frozen AttGAN ``G`` + trainable ``E_adv`` (Eq. 6-7, §IV-C).

    Args:
        generator: a trained AttGAN generator (stage 1); it is frozen in place
            (``requires_grad_(False)``, eval mode) and held as ``self.generator``.
        beta: β of Eq. 6, weight of G_enc's features (paper: 0.5). β=1 gives
            ``x_adv == x_cov_b`` (no perturbation).
        gamma: information-injection weight γ in [0, 1] (paper: not given).
        gamma_weights: which branch γ weights: "clean" (default) or "adversarial".
        inject: False disables information injection (the paper's "w/o" ablation).
        fuse_image: also fuse the last decoder block (the image itself).
        perturbation_bn: "batch" or "frozen" BatchNorm statistics in E_adv (module doc).
    """

    def __init__(
        self,
        generator: AttGANGenerator,
        *,
        beta: float = 0.5,
        gamma: float = 0.5,
        gamma_weights: Literal["clean", "adversarial"] = "clean",
        inject: bool = True,
        fuse_image: bool = False,
        perturbation_bn: Literal["batch", "frozen"] = "batch",
    ) -> None:
        super().__init__()
        if gamma_weights not in ("clean", "adversarial"):
            raise ValueError(f"`gamma_weights` must be 'clean' or 'adversarial'; got {gamma_weights!r}")
        if perturbation_bn not in ("batch", "frozen"):
            raise ValueError(f"`perturbation_bn` must be 'batch' or 'frozen'; got {perturbation_bn!r}")
        self.beta = _check_unit(beta, "beta")
        self.gamma = _check_unit(gamma, "gamma")
        self.gamma_weights = gamma_weights
        self.inject = bool(inject)
        self.fuse_image = bool(fuse_image)
        self.perturbation_bn = perturbation_bn
        self.generator = generator.requires_grad_(False)
        self.perturbation_encoder = PerturbationEncoder.from_generator(generator)
        self.train(self.training)

    @property
    def n_attrs(self) -> int:
        return self.generator.n_attrs

    def train(self, mode: bool = True) -> ErasableMaskGenerator:
        """Set E_adv's mode; the frozen G always stays in eval mode (BatchNorm uses running statistics)."""
        super().train(mode)
        self.generator.eval()
        if self.perturbation_bn == "frozen":
            for module in self.perturbation_encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    @property
    def clean_weight(self) -> float:
        """The weight of the clean branch in the per-layer fusion (γ or 1-γ, see ``gamma_weights``)."""
        return self.gamma if self.gamma_weights == "clean" else 1.0 - self.gamma

    def protect(self, x: Tensor, a_b: Tensor, *, e_adv_params: dict[str, Tensor] | None = None) -> ProtectOutput:
        """Generate the protected face ``x_adv^{att_b}`` and the attribute-only edit ``x_cov^{att_b}``.

        Args:
            x: clean faces ``x_cov^{att_a}``, (N, 3, H, W) in [-1, 1].
            a_b: target attribute code att_b, (N, n_attrs), coded (±0.5).
            e_adv_params: optional replacement for E_adv's parameters (names as in
                ``perturbation_encoder.named_parameters()``; missing names use the
                module's), applied with ``torch.func.functional_call`` without copying
                the module: the meta-auxiliary attack's ``θ'_E`` (Eq. 10).

        Returns:
            :class:`ProtectOutput` (x_adv, x_cov_b).
        """
        check_image_range(x, "x")
        check_attribute_code(a_b, self.n_attrs, x.shape[0], "a_b")
        g = self.generator
        ft = g.encode_unchecked(x)  # G_enc once, shared by Eq. 6, the clean branch and x_cov_b
        if e_adv_params is None:
            perb = self.perturbation_encoder(x)
        else:
            perb = functional_call(self.perturbation_encoder, e_adv_params, (x,))
        beta = self.beta
        fs = [beta * t + (1.0 - beta) * p for t, p in zip(ft, perb)]  # Eq. 6
        x_cov_b, h_clean = g.decode_layers(ft, a_b)  # clean branch: G_dec(z_clean, att_b)
        if not self.inject:
            return ProtectOutput(g.decode(fs, a_b), x_cov_b)  # Eq. 7 alone
        w = self.clean_weight
        n_fused = len(h_clean) if self.fuse_image else len(h_clean) - 1

        def fuse(i: int, h_adv: Tensor) -> Tensor:  # §IV-C: fusion after each decoder layer
            return w * h_clean[i] + (1.0 - w) * h_adv if i < n_fused else h_adv

        x_adv, _ = g.decode_layers(fs, a_b, fuse=fuse)  # Eq. 7 with injection
        return ProtectOutput(x_adv, x_cov_b)

    def forward(self, x: Tensor, a_b: Tensor, *, e_adv_params: dict[str, Tensor] | None = None) -> ProtectOutput:
        """Same as :meth:`protect`."""
        return self.protect(x, a_b, e_adv_params=e_adv_params)


class Restorer(nn.Module):
    """Restorer ``R`` (§IV-C, Eq. 13): ``x_rec = R(x_adv)``, G's structure, initialised from G.

    Args:
        config: an :class:`AttGANGenerator` keyword configuration (``G.config``).
        attribute_input: the attribute code R decodes with: "neutral" (default;
            zeros, a TA sees only x_adv), "source" (att_a, oracle upper bound) or
            "target" (att_b).
    """

    def __init__(self, config: dict, *, attribute_input: Literal["neutral", "source", "target"] = "neutral") -> None:
        super().__init__()
        if attribute_input not in ("neutral", "source", "target"):
            raise ValueError(f"`attribute_input` must be 'neutral', 'source' or 'target'; got {attribute_input!r}")
        self.attribute_input = attribute_input
        self.net = AttGANGenerator(**config)

    @classmethod
    def from_generator(
        cls, generator: AttGANGenerator, *, attribute_input: Literal["neutral", "source", "target"] = "neutral"
    ) -> Restorer:
        """A trainable restorer with G's structure and a copy of G's weights and BN statistics."""
        restorer = cls(generator.config, attribute_input=attribute_input)
        restorer.net.load_state_dict(generator.state_dict(), strict=True)
        restorer.requires_grad_(True)
        return restorer.to(next(generator.parameters()).device)

    def forward(self, x_adv: Tensor, a: Tensor | None = None) -> Tensor:
        """Restore protected faces.

        Args:
            x_adv: protected (possibly noised) faces, (N, 3, H, W) in [-1, 1].
            a: attribute code (N, n_attrs): required for "source" (att_a) and
                "target" (att_b), must be None for "neutral".

        Returns:
            ``x_rec``, (N, 3, H, W) in [-1, 1].
        """
        check_image_range(x_adv, "x_adv")
        n, n_attrs = x_adv.shape[0], self.net.n_attrs
        if self.attribute_input == "neutral":
            if a is not None:
                raise ValueError("this Restorer uses attribute_input='neutral' and takes no `a`; "
                                 "pass a=None, or build it with attribute_input='source' or 'target'")
            a = x_adv.new_zeros(n, n_attrs)
        elif a is None:
            raise ValueError(f"this Restorer uses attribute_input={self.attribute_input!r}: pass `a` "
                             f"((N, {n_attrs}) code of att_{'a' if self.attribute_input == 'source' else 'b'})")
        check_attribute_code(a, n_attrs, n, "a")
        return self.net.decode(self.net.encode_unchecked(x_adv), a)


def restorer_code(restorer_input: str, a_a: torch.Tensor, a_b: torch.Tensor) -> torch.Tensor | None:
    """The attribute code R decodes with (``protection.restorer_attribute_input``)."""
    return {"neutral": None, "source": a_a, "target": a_b}[restorer_input]
