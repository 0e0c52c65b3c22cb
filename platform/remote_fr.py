"""An FR model hosted in a Ray actor, used exactly like a local ``FaceRecognizer``, gradients of two orders included.

The training worker holds a :class:`RemoteFaceRecognizer`: an ``nn.Module``
with the wrapper's interface (``forward`` of ``(N, 3, H, W)`` images in
[-1, 1] to ``(N, D)`` unit embeddings, ``spec``, ``threshold(far)``,
``crop_and_resize``, ``weights_digest``, ``calibration_set``) and no
parameters. The model itself lives in an :class:`FRActor` (built once per
actor life by a picklable factory). Autograd crosses the process boundary
through two custom functions, with ``f`` the embedding map of the actor's
model:

- ``_RemoteEmbed``: forward ``y = f(x)`` (one round trip); backward
  ``x̄ = J(x)ᵀ ȳ`` through ``_RemoteVJP``, so the backward is itself recorded
  when it runs under ``create_graph=True`` (the meta-auxiliary attack's inner
  step, Eq. 10);
- ``_RemoteVJP``: forward ``v(x, ȳ) = J(x)ᵀ ȳ`` (one round trip); backward,
  given ``v̄``, the two second-order products the outer gradient needs:
  ``∂(v̄·v)/∂x = ∇ₓ(ȳ · J(x) v̄)`` (a Hessian-vector product of ``ȳ·f``) and
  ``∂(v̄·v)/∂ȳ = J(x) v̄`` (a Jacobian-vector product), both computed by the
  actor with autograd (double backward of its local model), in one round trip.

A third derivative raises (``_RemoteVJPBackward``) rather than coming back
silently wrong. The actor is stateless between calls: every call carries its inputs
(images, cotangents) and nothing is cached, so a restarted actor answers a
retried call exactly as the dead one would have (``max_task_retries``).
Tensors travel as CPU tensors; results come back on the caller's device, in
its dtype. :class:`CallStats` counts round trips and bytes per proxy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from erasablemask.experiments.devices import resolve_device
from erasablemask.models.fr.recognizer import FaceRecognizer
from erasablemask.models.fr.spec import FRSpec
from erasablemask.models.image_checks import check_image_range

__all__ = ["CallStats", "FRActor", "RemoteFaceRecognizer"]

FRFactory = Callable[[], nn.Module]  # picklable; builds the frozen FaceRecognizer inside the actor


class FRActor:
    """The actor-side half: one FR model, loaded once, answering embedding and derivative requests.

    Made a Ray actor by :func:`erasablemask.platform.fr_actors.start_fr_actors`
    (``ray.remote(FRActor).options(...)``); plain Python here so it can be
    tested in-process.

    Args:
        factory: ``() -> FaceRecognizer`` (frozen, eval mode), called once per actor life.
        device: where the model runs in the actor (``compute.device`` syntax; ``"auto"``: the (fractional)
            GPU Ray assigned to the actor, else its CPUs).
        num_threads: torch CPU threads in the actor.
    """

    def __init__(self, factory: FRFactory, device: str = "auto", num_threads: int = 1) -> None:
        torch.set_num_threads(max(1, int(num_threads)))
        self.device = resolve_device(device, announce=False)
        self.model = factory().requires_grad_(False).eval().to(self.device)
        self.dtype = next((t.dtype for t in self.model.parameters()), torch.float32)

    def pid(self) -> int:
        """This actor's process id (tests kill it)."""
        return os.getpid()

    def describe(self) -> dict[str, Any]:
        """What the proxy mirrors: ``spec``, ``weights_digest``, ``calibration_set``."""
        return {"spec": self.model.spec, "weights_digest": getattr(self.model, "weights_digest", None),
                "calibration_set": getattr(self.model, "calibration_set", None)}

    def _in(self, t: Tensor, grad: bool = False) -> Tensor:
        return t.to(self.device, self.dtype).detach().requires_grad_(grad)

    def embed(self, x: Tensor) -> Tensor:
        """``f(x)``: ``(N, 3, H, W)`` in [-1, 1] -> ``(N, D)`` unit embeddings (CPU)."""
        with torch.no_grad():
            return self.model(self._in(x)).cpu()

    def vjp(self, x: Tensor, g: Tensor) -> Tensor:
        """``J(x)ᵀ g``: ``(N, 3, H, W)`` (CPU); ``g`` is ``(N, D)``."""
        xr = self._in(x, grad=True)
        with torch.enable_grad():
            (gx,) = torch.autograd.grad(self.model(xr), xr, self._in(g))
        return gx.cpu()

    def vjp_backward(self, x: Tensor, g: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Cotangents of ``v(x, g) = J(x)ᵀ g`` for ``v̄ = u``: ``(∇ₓ(g·J(x)u), J(x)u)``, shapes of ``x`` and ``g``."""
        xr, gr = self._in(x, grad=True), self._in(g, grad=True)
        with torch.enable_grad():
            (v,) = torch.autograd.grad(self.model(xr), xr, gr, create_graph=True)
            gx, gg = torch.autograd.grad(v, (xr, gr), self._in(u), allow_unused=True, materialize_grads=True)
        return gx.cpu(), gg.cpu()


@dataclass
class CallStats:
    """Traffic of one proxy: actor calls made and tensor bytes each way (payload only)."""

    round_trips: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    def reset(self) -> None:
        self.round_trips = self.bytes_sent = self.bytes_received = 0


class _Client:
    """Calls one actor's methods with CPU tensors and counts the traffic."""

    def __init__(self, handle: Any, name: str) -> None:
        self.handle, self.name, self.stats = handle, name, CallStats()

    def call(self, method: str, *tensors: Tensor) -> Any:
        import ray

        args = [t.detach().cpu() for t in tensors]
        self.stats.round_trips += 1
        self.stats.bytes_sent += sum(t.nbytes for t in args)
        try:
            out = ray.get(getattr(self.handle, method).remote(*args))
        except ray.exceptions.RayActorError as err:
            raise RuntimeError(
                f"the Ray actor serving FR model '{self.name}' died and could not be restarted "
                f"({method}); raise compute.remote_fr.max_restarts or check the actor's log: {err}"
            ) from err
        self.stats.bytes_received += sum(t.nbytes for t in (out if isinstance(out, tuple) else (out,)))
        return out


def _like(t: Tensor, ref: Tensor) -> Tensor:
    return t.to(device=ref.device, dtype=ref.dtype)


class _RemoteEmbed(torch.autograd.Function):
    """``y = f(x)`` on the actor; backward ``J(x)ᵀ ȳ`` via the differentiable :class:`_RemoteVJP`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, client: _Client) -> Tensor:
        ctx.client = client
        ctx.save_for_backward(x)
        return _like(client.call("embed", x), x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None]:
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return _RemoteVJP.apply(x, g, ctx.client), None


class _RemoteVJP(torch.autograd.Function):
    """``v = J(x)ᵀ g`` on the actor; backward: the HVP and JVP of :meth:`FRActor.vjp_backward`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, g: Tensor, client: _Client) -> Tensor:
        ctx.client = client
        ctx.save_for_backward(x, g)
        return _like(client.call("vjp", x, g), x)

    @staticmethod
    def backward(ctx: Any, u: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, g = ctx.saved_tensors
        gx, gg = _RemoteVJPBackward.apply(x, g, u, ctx.client)
        return gx, gg, None


class _RemoteVJPBackward(torch.autograd.Function):
    """The second-order products of :meth:`FRActor.vjp_backward`; differentiating them again raises.

    A Function (not ``once_differentiable``) so that its outputs stay connected
    to ``x``, ``g`` and ``u``: a third derivative then reaches :meth:`backward`
    and fails loudly instead of coming back as zero.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, g: Tensor, u: Tensor, client: _Client) -> tuple[Tensor, Tensor]:
        ctx.name = client.name
        gx, gg = client.call("vjp_backward", x, g, u)
        return _like(gx, x), _like(gg, g)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError(f"a third derivative through the remote FR model '{ctx.name}' is not supported "
                           "(the actor computes up to second-order products); keep create_graph=False "
                           "on the outer backward, or host this model locally (compute.remote_fr.models)")


class RemoteFaceRecognizer(nn.Module):
    """A ``FaceRecognizer`` whose model lives in a Ray actor (module docstring); same interface, same gradients.

    Args:
        handle: the :class:`FRActor` actor handle.
        name: the model's registry name (for errors).
        meta: ``FRActor.describe()`` (fetched when None: one round trip).

    Attributes:
        spec, weights_digest, calibration_set: the actor's model's.
        stats: :class:`CallStats` of this proxy.
    """

    def __init__(self, handle: Any, name: str, meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._client = _Client(handle, name)
        if meta is None:
            import ray

            meta = ray.get(handle.describe.remote())
        self.spec: FRSpec = meta["spec"]
        self.weights_digest: str | None = meta["weights_digest"]
        self.calibration_set: str | None = meta["calibration_set"]

    @property
    def handle(self) -> Any:
        return self._client.handle

    @property
    def stats(self) -> CallStats:
        return self._client.stats

    # The wrapper's spec-only methods, shared with the local FaceRecognizer (one implementation).
    crop_and_resize = FaceRecognizer.crop_and_resize
    threshold = FaceRecognizer.threshold

    def forward(self, x: Tensor) -> Tensor:
        """Embed images on the actor.

        Args:
            x: ``(N, 3, H, W)`` RGB in [-1, 1], any device and float dtype.

        Returns:
            ``(N, embedding_size)`` L2-normalised embeddings on ``x``'s device and dtype,
            differentiable twice w.r.t. ``x``.
        """
        check_image_range(x, f"input of FR model '{self.spec.name}'")
        return _RemoteEmbed.apply(x, self._client)

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}, actor={self._client.handle}"
