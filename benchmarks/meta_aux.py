"""Cost of one stage-2 step: meta-auxiliary attack vs the plain ensemble attack (issue 5, Performance).

For the same batch and the same K surrogates this times one full stage-2
step (protect → noise → L_adv, R, D heads → Eq. 15 → backward → Adam step on
E_adv and R) with each attack method, measures its peak memory, and compares
the measured time ratio with a count of the passes each step must make.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory
allocated before the step; on CPU the peak resident set size of the process
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) minus the RSS
before the warm-up steps (so it includes Adam's state; see :func:`worker_step`). Each method runs in a fresh subprocess so
that no allocator cache carries over.

    python benchmarks/meta_aux.py                      # tiny CPU sizes (mini FR nets, 32², width 8)
    python benchmarks/meta_aux.py --fr paper --size 256 --enc-dim 64 --enc-layers 5 --batch 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from erasablemask.experiments.attacks.meta_auxiliary import TargetEmbeddings, adversarial_loss, make_generate
from erasablemask.experiments.curriculum.losses import (
    attribute_loss,
    discriminator_loss,
    erasion_loss,
    generator_gan_loss,
    perturbation_loss,
    reconstruction_loss,
    stage2_loss,
)
from erasablemask.models.attgan import AttGANDiscriminator, AttGANGenerator
from erasablemask.models.erasablemask import ErasableMaskGenerator, Restorer
from erasablemask.models.fr.registry import FaceRecognizer, FRSpec, Preprocessing

METHODS = ("ensemble", "first_order", "meta_auxiliary")
MINI = {"ir152": "iresnet", "irse50": "irse", "facenet": "incept", "mobile_face": "mobileface"}


def _configs() -> SimpleNamespace:
    """Stage1/2 and Attack config defaults; the paper's values inline if pydantic is missing (GPU image)."""
    try:
        from erasablemask.experiments.config.schema import AttackConfig, Stage1Config, Stage2Config
        return SimpleNamespace(s1=Stage1Config(), s2=Stage2Config(), attack=AttackConfig(),
                               source="experiments.config")
    except ImportError:  # the lent GPU's python has torch but not pydantic
        adam = SimpleNamespace(lr=2e-5, betas=(0.5, 0.999))
        s1 = SimpleNamespace(lambda_rec=150.0, lambda_att=10.0, lambda_G=1.0, lambda_att_D=1.0, gan_loss="log",
                             gradient_penalty=10.0, optimizer=adam)
        s2 = SimpleNamespace(lambda_att=10.0, lambda_rec=150.0, lambda_G=1.0, lambda_adv=200.0, lambda_era=150.0,
                             lambda_perb=1.0, sigma1=30.0, perb_units="unit_per_image", sigma1_scale_with_size=True,
                             era_reduction="mean", optimizer=adam)
        return SimpleNamespace(s1=s1, s2=s2, attack=SimpleNamespace(meta_lr=1e-2, epsilon=0.2),
                               source="inline paper defaults (pydantic missing)")


def build_surrogates(kind: str, names: list[str], size: int) -> dict[str, FaceRecognizer]:
    """Frozen, eval-mode FR models with random weights: the paper zoo's architectures or mini-world ones."""
    out = {}
    for i, name in enumerate(names):
        torch.manual_seed(100 + i)
        if kind == "paper":
            from erasablemask.models.fr.paper_zoo import PAPER_ZOO
            spec, make = PAPER_ZOO[name]
            fr = FaceRecognizer(make(), spec)
        else:
            from erasablemask.models.fr.mini import build_mini_backbone
            s = max(16, size)
            spec = FRSpec(name=f"mini_{MINI[name]}", family=MINI[name], embedding_size=128,
                          preprocessing=Preprocessing(size=(s, s)))
            fr = FaceRecognizer(build_mini_backbone(MINI[name], input_size=s), spec)
        out[name] = fr.requires_grad_(False).eval()
    return out


def build(args: argparse.Namespace) -> SimpleNamespace:
    """Models, optimiser and one batch for a stage-2 step."""
    dev = torch.device(args.device)
    torch.manual_seed(0)
    n_attrs = 13
    g = AttGANGenerator(enc_dim=args.enc_dim, enc_layers=args.enc_layers, dec_dim=args.enc_dim,
                        dec_layers=args.enc_layers, n_attrs=n_attrs, img_size=args.size)
    d = AttGANDiscriminator(dim=args.enc_dim, n_layers=args.enc_layers, n_attrs=n_attrs, img_size=args.size,
                            fc_dim=args.fc_dim).to(dev).train()
    model = ErasableMaskGenerator(g, beta=0.5, gamma=0.05).to(dev).train()
    restorer = Restorer.from_generator(g).to(dev).train()
    surrogates = {k: v.to(dev) for k, v in build_surrogates(args.fr, args.surrogates, args.size).items()}
    noise = None
    if args.noise != "none":
        from erasablemask.models.noise_pool import TrainingNoisePool
        noise = TrainingNoisePool(layers=[args.noise]).to(dev)
    cfg = _configs()
    params = dict(model.perturbation_encoder.named_parameters())
    opt = torch.optim.Adam([*params.values(), *restorer.parameters()], lr=cfg.s2.optimizer.lr,
                           betas=cfg.s2.optimizer.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.s2.optimizer.lr, betas=cfg.s2.optimizer.betas)
    gen = torch.Generator().manual_seed(1)
    x_target = (torch.rand(1, 3, args.size, args.size, generator=gen) * 2 - 1).to(dev)
    targets = TargetEmbeddings(surrogates, x_target)
    weights = {n: 1.0 for n in surrogates}
    c = SimpleNamespace(model=model, d=d, restorer=restorer, surrogates=surrogates, noise=noise,
                        s1=cfg.s1, s2=cfg.s2, attack=cfg.attack, cfg_source=cfg.source, params=params, opt=opt, opt_d=opt_d,
                        targets=targets, weights=weights, dev=dev, size=args.size, n_attrs=n_attrs)
    return set_batch(c, args.batch)


def set_batch(c: SimpleNamespace, batch: int) -> SimpleNamespace:
    """Put a fixed random batch of ``batch`` images and attribute labels in ``c`` (in place; returns ``c``)."""
    gen = torch.Generator().manual_seed(2)
    c.x = (torch.rand(batch, 3, c.size, c.size, generator=gen) * 2 - 1).to(c.dev)
    c.att_a01 = torch.randint(0, 2, (batch, c.n_attrs), generator=gen).float().to(c.dev)
    c.att_b01 = 1 - c.att_a01
    c.a_a, c.a_b = c.att_a01 - 0.5, c.att_b01 - 0.5  # AttGAN's ±0.5 code
    return c


def stage2_step(c: SimpleNamespace, method: str, step: int, dtype: torch.dtype | None) -> None:
    """One stage-2 step (Eq. 15) with attack ``method``; ``dtype`` enables autocast (e.g. bf16).

    The same passes as ``experiments/curriculum/stage2.py``'s ``Stage2Trainer.train_step`` (whose defaults take
    L_rec on ``protect(x, att_a)`` and train D on x_adv), rebuilt here from random weights: the trainer
    needs a full config, data and a stage-1 checkpoint, and the lent GPU's Python has no pydantic.
    """
    s2 = c.s2
    with torch.autocast(c.dev.type, dtype=dtype, enabled=dtype is not None):
        out = c.model.protect(c.x, c.a_b)
        generate = make_generate(c.model, c.x, c.a_b, noise=c.noise, noise_seed=step)
        x_seen = out.x_adv if c.noise is None else c.noise(out.x_adv, generator=torch.Generator().manual_seed(step))
        adv = adversarial_loss(generate, c.params, c.surrogates, c.targets, c.weights, method=method,
                               meta_lr=c.attack.meta_lr, epsilon=c.attack.epsilon, x_adv=x_seen)
        x_rec = c.restorer(x_seen)
        d_g, d_att = c.d(out.x_adv)
        total, _ = stage2_loss(
            l_att=attribute_loss(d_att.float(), c.att_b01), l_G=generator_gan_loss(d_g.float()),
            l_rec=reconstruction_loss(c.model.protect(c.x, c.a_a).x_adv.float(), c.x), l_adv=adv.loss.float(),
            l_era=erasion_loss(x_rec.float(), c.x, reduction=s2.era_reduction),
            l_perb=perturbation_loss(out.x_adv.float(), out.x_cov_b.float(), sigma1=s2.sigma1, units=s2.perb_units,
                                     scale_with_size=s2.sigma1_scale_with_size),
            cfg=s2)
    c.opt.zero_grad(set_to_none=True)
    total.backward()
    c.opt.step()
    with torch.autocast(c.dev.type, dtype=dtype, enabled=dtype is not None):  # D on x_adv as the fake
        n = c.x.shape[0]
        d_g, d_att = c.d(torch.cat([c.x, out.x_adv.detach()]))
        l_d = discriminator_loss(d_g[:n].float(), d_g[n:].float()) + attribute_loss(d_att[:n].float(), c.att_a01)
    c.opt_d.zero_grad(set_to_none=True)
    l_d.backward()
    c.opt_d.step()


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _rss_kib() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}


def _reset_peak(dev: torch.device) -> int:
    """Reset the peak counter; returns the baseline in bytes."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return torch.cuda.memory_allocated(dev)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return _rss_kib()["VmRSS"] * 1024


def _peak(dev: torch.device) -> int:
    return torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _rss_kib()["VmHWM"] * 1024


def measure_step(c: SimpleNamespace, method: str, *, warmup: int, repeats: int, dtype: torch.dtype | None,
                 step_fn=None) -> dict:
    """Time ``step_fn(c, method, step, dtype)`` (default :func:`stage2_step`): warm-up, then ``repeats`` steps.

    Peak memory: CPU baseline before the warm-up, else glibc reuses the warm-up's freed heap and the timed
    steps raise no RSS (the delta then also holds Adam's state and the kept .grad tensors); CUDA baseline
    after it, so the delta is the step's own working set (``peak_total_bytes`` is the card's absolute peak).
    """
    step_fn = step_fn or stage2_step
    base = _reset_peak(c.dev) if c.dev.type == "cpu" else 0
    for i in range(warmup):
        step_fn(c, method, i, dtype)
    _sync(c.dev)
    if c.dev.type == "cuda":
        base = _reset_peak(c.dev)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        step_fn(c, method, warmup + i, dtype)
        _sync(c.dev)
        times.append(time.perf_counter() - t0)
    return {"method": method, "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
            "peak_bytes": _peak(c.dev) - base, "peak_total_bytes": _peak(c.dev), "cfg_source": c.cfg_source}


def worker_step(args: argparse.Namespace) -> dict:
    """Measure method ``args.worker`` in this fresh process (see :func:`measure_step`)."""
    return measure_step(build(args), args.worker, warmup=args.warmup, repeats=args.repeats,
                        dtype=torch.bfloat16 if args.dtype == "bf16" else None)


def worker_components(args: argparse.Namespace) -> dict:
    """:func:`measure_components` in this fresh process."""
    return measure_components(build(args), warmup=args.warmup, repeats=args.repeats,
                              dtype=torch.bfloat16 if args.dtype == "bf16" else None)


def measure_components(c: SimpleNamespace, *, warmup: int, repeats: int, dtype: torch.dtype | None) -> dict:
    """Cost of each pass the count is made of (min of 3×repeats, seconds), measured in isolation.

    Keys: ``g``/``r``/``d`` forward of protect (+ noise), R, D; ``f`` per FR; ``bg`` backward of x_adv to
    E_adv's parameters; ``br``/``bd`` backward of R (to its parameters and input) and D (to its input);
    ``bf`` per FR to its input; ``dd`` per primary: the double backward through the inner-gradient graph
    of (G, FR_p), i.e. the time of fwd + inner grad (create_graph) + its backward minus the single passes.
    """
    auto = lambda: torch.autocast(c.dev.type, dtype=dtype, enabled=dtype is not None)  # noqa: E731
    noise = c.noise or (lambda t, generator=None: t)
    theta = list(c.params.values())

    def timed(fn) -> float:
        for _ in range(max(1, warmup)):
            fn()
        _sync(c.dev)
        ts = []
        for _ in range(3 * repeats):
            t0 = time.perf_counter()
            fn()
            _sync(c.dev)
            ts.append(time.perf_counter() - t0)
        return min(ts)

    def protect() -> torch.Tensor:
        return noise(c.model.protect(c.x, c.a_b).x_adv, generator=torch.Generator().manual_seed(0))

    def backward_only(forward, inputs) -> float:  # (fwd + bwd) − fwd, with a fixed random output gradient
        def both():
            with auto():
                y = forward()
            torch.autograd.grad(y, inputs, torch.ones_like(y) / y.numel())
        def fwd():
            with auto():
                forward()
        return max(timed(both) - timed(fwd), 0.0)

    with torch.no_grad():
        x_adv = protect().detach()
    x_in = x_adv.clone().requires_grad_(True)
    out: dict = {}
    with torch.no_grad(), auto():
        out.update(g=timed(protect), r=timed(lambda: c.restorer(x_adv)), d=timed(lambda: c.d(x_adv)[0]))
        out["f"] = {n: timed(lambda fr=fr: fr(x_adv)) for n, fr in c.surrogates.items()}
    out["bg"] = backward_only(protect, theta)
    out["br"] = backward_only(lambda: c.restorer(x_in), [x_in, *c.restorer.parameters()])
    out["bd"] = backward_only(lambda: c.d(x_in)[0], [x_in])
    out["bf"] = {n: backward_only(lambda fr=fr: fr(x_in), [x_in]) for n, fr in c.surrogates.items()}
    out["dd"] = {}
    for n, fr in c.surrogates.items():
        t_emb = c.targets.get(n)

        def hvp(fr=fr, t_emb=t_emb) -> None:
            with auto():
                loss = 1 - torch.nn.functional.cosine_similarity(fr(protect()), t_emb, dim=1).mean()
            grads = torch.autograd.grad(loss, theta, create_graph=True)
            torch.autograd.grad(sum((g.float() ** 2).sum() for g in grads), theta)
        single = out["g"] + out["f"][n] + 2 * (out["bg"] + out["bf"][n])  # fwd, inner bwd, its plain bwd
        out["dd"][n] = max(timed(hvp) - single, 0.0)
    return out


def counted_work(k: int) -> dict[str, dict[str, str]]:
    """Passes per step through G (protect) and each FR (the count the measured ratio is compared with).

    Common to every method: a second protect (att_a, for L_rec) with its backward, R forward/backward,
    D on x_adv forward/backward, and the D step (D on 2B images, forward/backward).
    """
    common = "+ common: protect(att_a) fwd/bwd, R fwd/bwd, D fwd/bwd, D step"
    return {
        "ensemble": {"G fwd": "1", "FR_i fwd": "1 each", "backward": "1 through G, each FR", "": common},
        "first_order": {"G fwd": f"1+K = {1 + k}", "FR_i fwd": f"K = {k} each",
                        "inner backward (no graph)": f"K = {k} through G, 1 through each FR",
                        "outer backward": f"{1 + k} through G, {k} through each FR", "": common},
        "meta_auxiliary": {"G fwd": f"1+K = {1 + k}", "FR_i fwd": f"K = {k} each",
                           "inner backward (create_graph)": f"K = {k} through G, 1 through each FR",
                           "outer backward": f"{1 + k} through G, {k} through each FR",
                           "double backward": f"K = {k} through the inner (G + FR_p) gradient graphs", "": common},
    }


def predicted_cost(c: dict) -> dict[str, dict[str, float]]:
    """Step cost (s) of each method from the pass count of :func:`counted_work`.

    ``"measured passes"``: each pass at its measured cost (:func:`measure_components`).
    ``"rule"``: forward costs only, backward = 2×forward through E_adv's half of protect (``bg`` = g) and
    through FR, R, D; double backward = 2×(inner backward) = 4(g/2 + f_p).
    """
    f_sum = sum(c["f"].values())
    out = {}
    for label, bg, bf, dd, br, bd in (
        ("measured passes", c["bg"], c["bf"], c["dd"], c["br"], c["bd"]),
        ("rule", c["g"], {n: 2 * v for n, v in c["f"].items()},
         {n: 4 * (c["g"] / 2 + v) for n, v in c["f"].items()}, 2 * c["r"], 2 * c["d"]),
    ):
        bf_sum, g = sum(bf.values()), c["g"]
        common = (g + bg) + (c["r"] + br) + (c["d"] + bd) + 2 * (c["d"] + bd)  # L_rec, R, D heads, D step
        ens = g + f_sum + bg + bf_sum + common
        first = ens + sum(bg + bf[p] + g + f_sum - c["f"][p] + bg + bf_sum - bf[p] for p in c["f"])
        out[label] = {"ensemble": ens, "first_order": first, "meta_auxiliary": first + sum(dd.values())}
    return out


def _spawn(args: argparse.Namespace, worker: str) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), *args.forward, "--worker", worker]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"worker {worker} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=64, help="image side (paper: 256)")
    p.add_argument("--enc-dim", type=int, default=16, help="AttGAN base width (paper: 64)")
    p.add_argument("--enc-layers", type=int, default=4, help="AttGAN depth (paper: 5)")
    p.add_argument("--fc-dim", type=int, default=64, help="D's head width (paper: 1024)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--fr", choices=("mini", "paper"), default="mini",
                   help="surrogate architectures: mini-world nets (CPU) or the paper zoo (random weights)")
    p.add_argument("--surrogates", default="ir152,irse50,facenet", help="comma-separated; K = their number")
    p.add_argument("--noise", default="none", help="training noise layer in the step: none|identity|jpeg|gaussian|resize")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = torch.autocast(bfloat16)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.forward = [a for a in (argv if argv is not None else sys.argv[1:])]
    if "--worker" in args.forward:
        i = args.forward.index("--worker")
        del args.forward[i:i + 2]
    args.surrogates = [s for s in args.surrogates.split(",") if s]
    args.methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in args.methods if m not in METHODS]
    if bad or "ensemble" not in args.methods:
        p.error(f"--methods must include 'ensemble' (the baseline) and only {METHODS}; got {args.methods}")
    if args.size % 2 ** args.enc_layers:
        p.error(f"--size {args.size} must be a multiple of 2**--enc-layers = {2 ** args.enc_layers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        result = worker_components(args) if args.worker == "components" else worker_step(args)
        print(json.dumps(result))
        return 0
    k = len(args.surrogates)
    mem_how = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "peak RSS (VmHWM) delta"
    print(f"stage-2 step, {args.size}², batch {args.batch}, AttGAN width {args.enc_dim}×{args.enc_layers} layers, "
          f"K={k} {args.fr} surrogates {args.surrogates}, noise {args.noise}, {args.device} {args.dtype}, "
          f"torch threads {torch.get_num_threads()}; {args.repeats} steps after {args.warmup} warm-up")
    comp = _spawn(args, "components")
    results = {m: _spawn(args, m) for m in args.methods}
    pred = predicted_cost(comp)
    base = results["ensemble"]
    ms = lambda v: f"{v * 1e3:.2f}"  # noqa: E731
    print(f"pass costs (ms): fwd G {ms(comp['g'])}, R {ms(comp['r'])}, D {ms(comp['d'])}, "
          + ", ".join(f"FR {n} {ms(t)}" for n, t in comp["f"].items())
          + f"; bwd G→E_adv {ms(comp['bg'])}, R {ms(comp['br'])}, D {ms(comp['bd'])}, "
          + ", ".join(f"FR {n} {ms(t)}" for n, t in comp["bf"].items())
          + "; double bwd " + ", ".join(f"{n} {ms(t)}" for n, t in comp["dd"].items()))
    print(f"{'method':<15}{'median ms':>10}{'min ms':>9}{'ratio(med)':>11}{'ratio(min)':>11}"
          f"{'pred(passes)':>13}{'pred(rule)':>11}{'peak MiB':>10}{'mem ratio':>10}")
    for m, r in results.items():
        print(f"{m:<15}{r['median_s'] * 1e3:>10.1f}{r['min_s'] * 1e3:>9.1f}{r['median_s'] / base['median_s']:>11.2f}"
              f"{r['min_s'] / base['min_s']:>11.2f}"
              f"{pred['measured passes'][m] / pred['measured passes']['ensemble']:>13.2f}"
              f"{pred['rule'][m] / pred['rule']['ensemble']:>11.2f}{r['peak_bytes'] / 2**20:>10.1f}"
              f"{r['peak_bytes'] / max(base['peak_bytes'], 1):>10.2f}")
    print(f"peak memory = {mem_how}. pred(passes): the count below × each pass's measured cost; "
          "pred(rule): backward = 2×forward, double backward = 2×backward (predicted_cost's docstring)")
    for m, work in counted_work(k).items():
        if m in results:
            print(f"  {m}: " + "; ".join(f"{a}: {b}" if a else b for a, b in work.items()))
    if args.json:
        payload = {"args": {k_: v for k_, v in vars(args).items() if k_ != "json"}, "components": comp,
                   "results": results, "predicted_s": pred}
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
