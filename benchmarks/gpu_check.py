"""Paper-size training steps on a lent GPU and the GPU-hours of a full reproduction (issue 5, GPU).

Run through ``benchmarks/gpu_check.sh`` (it picks the Python). For each
(dtype, batch) in the grid it times, in one process with the models built
once: the stage-2 step (Eq. 15) with the plain ensemble and the
meta-auxiliary attack (benchmarks/meta_aux.py's ``stage2_step``), a stage-1
step (Eq. 14: one D step + one G step, log GAN loss) and a stage-3 step
(Eq. 16: protect without grad, R forward/backward), each with its peak
memory; an out-of-memory error is recorded as OOM, not a crash. Then

    GPU-hours = ceil(28000 / B) · (200·t1 + 100·t2 + 50·t3) / 3600

(the paper's 200/100/50 epochs on CelebA-HQ's 28,000 training images; t2 with
the meta-auxiliary attack, and with the ensemble for comparison). The
surrogates are ir152/irse50/facenet with random weights (timing does not
depend on the weights); no noise pool (kornia is not on the GPU image), whose
layers are cheap next to the FR models. ``--dry-run`` runs the same code at
tiny sizes on the CPU with mini FR nets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import meta_aux as bench  # noqa: E402  (benchmarks/ is not a package)

from erasablemask.experiments.curriculum.losses import (
    attribute_loss,
    discriminator_loss,
    erasion_loss,
    generator_gan_loss,
    reconstruction_loss,
    stage1_discriminator_loss,
    stage1_generator_loss,
    stage3_loss,
)
from erasablemask.models.attgan import AttGANDiscriminator, AttGANGenerator  # noqa: E402

N_TRAIN, EPOCHS = 28_000, {"stage1": 200, "stage2": 100, "stage3": 50}  # paper §V-A


def add_stage1_models(c: SimpleNamespace, args: argparse.Namespace) -> None:
    """A trainable AttGAN G and D (stage 1) beside the frozen ones used by stage 2."""
    torch.manual_seed(3)
    c.g1 = AttGANGenerator(enc_dim=args.enc_dim, enc_layers=args.enc_layers, dec_dim=args.enc_dim,
                           dec_layers=args.enc_layers, n_attrs=c.n_attrs, img_size=args.size).to(c.dev).train()
    c.d1 = AttGANDiscriminator(dim=args.enc_dim, n_layers=args.enc_layers, n_attrs=c.n_attrs, img_size=args.size,
                               fc_dim=args.fc_dim).to(c.dev).train()
    lr, betas = c.s1.optimizer.lr, c.s1.optimizer.betas
    c.opt_g1 = torch.optim.Adam(c.g1.parameters(), lr=lr, betas=betas)
    c.opt_d1 = torch.optim.Adam(c.d1.parameters(), lr=lr, betas=betas)
    c.opt_r = torch.optim.Adam(c.restorer.parameters(), lr=c.s2.optimizer.lr, betas=c.s2.optimizer.betas)


def stage1_step(c: SimpleNamespace, _method: str, _step: int, dtype: torch.dtype | None) -> None:
    """One D step and one G step of Eq. 14 (log loss; d_steps_per_g_step = 1, the config default)."""
    auto = torch.autocast(c.dev.type, dtype=dtype, enabled=dtype is not None)
    with auto:
        fake = c.g1(c.x, c.a_b).detach()
        d_real, att_real = c.d1(c.x)
        d_fake, _ = c.d1(fake)
        total_d, _ = stage1_discriminator_loss(
            l_D=discriminator_loss(d_real.float(), d_fake.float(), kind="log"),
            l_att_D=attribute_loss(att_real.float(), c.att_a01), cfg=c.s1)
    c.opt_d1.zero_grad(set_to_none=True)
    total_d.backward()
    c.opt_d1.step()
    with auto:
        zs = c.g1.encode(c.x)
        fake = c.g1.decode(zs, c.a_b)
        rec = c.g1.decode(zs, c.a_a)
        d_fake, att_fake = c.d1(fake)
        total_g, _ = stage1_generator_loss(
            l_rec=reconstruction_loss(rec.float(), c.x), l_att=attribute_loss(att_fake.float(), c.att_b01),
            l_G=generator_gan_loss(d_fake.float(), kind="log"), cfg=c.s1)
    c.opt_g1.zero_grad(set_to_none=True)
    total_g.backward()
    c.opt_g1.step()


def stage3_step(c: SimpleNamespace, _method: str, _step: int, dtype: torch.dtype | None) -> None:
    """Eq. 16: R alone on protected faces (E_adv frozen; no noise layer, see the module docstring)."""
    with torch.autocast(c.dev.type, dtype=dtype, enabled=dtype is not None):
        with torch.no_grad():
            x_adv = c.model.protect(c.x, c.a_b).x_adv
        total, _ = stage3_loss(l_era=erasion_loss(c.restorer(x_adv).float(), c.x, reduction=c.s2.era_reduction))
    c.opt_r.zero_grad(set_to_none=True)
    total.backward()
    c.opt_r.step()


def measure(c: SimpleNamespace, what: str, method: str, args: argparse.Namespace, dtype) -> dict:
    step_fn = {"stage1": stage1_step, "stage2": None, "stage3": stage3_step}[what]
    try:
        return bench.measure_step(c, method, warmup=args.warmup, repeats=args.repeats, dtype=dtype, step_fn=step_fn)
    except torch.OutOfMemoryError as exc:
        return {"method": method, "oom": str(exc).splitlines()[0][:200]}
    finally:
        for opt in (c.opt, c.opt_g1, c.opt_d1, c.opt_r):
            opt.zero_grad(set_to_none=True)
        if c.dev.type == "cuda":
            torch.cuda.empty_cache()


def gpu_hours(batch: int, t1: float, t2: float, t3: float) -> float:
    steps = math.ceil(N_TRAIN / batch)
    return steps * (EPOCHS["stage1"] * t1 + EPOCHS["stage2"] * t2 + EPOCHS["stage3"] * t3) / 3600


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, mini FR nets, CPU: checks the script runs")
    p.add_argument("--batches", default=None, help="comma list (default 8,16; dry run 2)")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--methods", default="ensemble,meta_auxiliary")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=240.0, help="start no new configuration after this")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    args = p.parse_args(argv)
    tiny = args.dry_run
    args.size, args.enc_dim, args.enc_layers, args.fc_dim = (32, 8, 3, 32) if tiny else (256, 64, 5, 1024)
    args.fr, args.surrogates, args.noise = ("mini" if tiny else "paper"), ["ir152", "irse50", "facenet"], "none"
    args.device = "cpu" if tiny else "cuda"
    args.batches = [int(b) for b in (args.batches or ("2" if tiny else "8,16")).split(",")]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.methods = [m for m in args.methods.split(",") if m]
    args.batch = args.batches[0]
    if not tiny and not torch.cuda.is_available():
        p.error("no CUDA device: run on the lent GPU, or pass --dry-run to check the script on the CPU")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t_start = time.perf_counter()
    dev_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (dry run)"
    print(f"torch {torch.__version__} on {dev_name}; cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
          f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}; {args.size}², AttGAN {args.enc_dim}×"
          f"{args.enc_layers}, surrogates {args.surrogates} ({args.fr}, random weights)", flush=True)
    c = bench.build(args)
    add_stage1_models(c, args)
    print(f"models built in {time.perf_counter() - t_start:.1f}s (config: {c.cfg_source})", flush=True)
    rows = []
    for dtype_name in args.dtypes:
        dtype = torch.bfloat16 if dtype_name == "bf16" else None
        for batch in args.batches:
            if time.perf_counter() - t_start > args.budget_s:
                print(f"skip {dtype_name} batch {batch}: time budget {args.budget_s:.0f}s spent", flush=True)
                continue
            bench.set_batch(c, batch)
            row = {"dtype": dtype_name, "batch": batch}
            for m in args.methods:
                row[f"stage2_{m}"] = measure(c, "stage2", m, args, dtype)
            row["stage1"] = measure(c, "stage1", "-", args, dtype)
            row["stage3"] = measure(c, "stage3", "-", args, dtype)
            rows.append(row)
            print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "times_s"})
                              for k, v in row.items()}), flush=True)
    print_table(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps({"device": dev_name, "torch": torch.__version__, "size": args.size,
                               "rows": rows}, indent=2, default=str))
    os.replace(tmp, args.out / "gpu_check.json")
    print(f"total {time.perf_counter() - t_start:.1f}s; wrote {args.out / 'gpu_check.json'}")
    return 0


def _cell(r: dict) -> tuple[str, str, float | None]:
    if "oom" in r:
        return "OOM", "OOM", None
    return f"{r['min_s'] * 1e3:.0f}", f"{r['peak_total_bytes'] / 2**30:.1f}", r["min_s"]


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    """Markdown table: step ms (min of repeats) / absolute peak GiB per stage, ratio, projected GPU-hours."""
    meths = args.methods
    head = ["dtype", "B"] + [f"S2 {m} ms / GiB" for m in meths] + ["meta/ens", "S1 ms / GiB", "S3 ms / GiB",
                                                                   "GPU-h (meta)", "GPU-h (ens)"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        cells, t2 = [row["dtype"], str(row["batch"])], {}
        for m in meths:
            ms, gib, t = _cell(row[f"stage2_{m}"])
            cells.append(f"{ms} / {gib}")
            t2[m] = t
        ratio = (t2.get("meta_auxiliary") or math.nan) / (t2.get("ensemble") or math.nan)
        cells.append(f"{ratio:.2f}")
        (ms1, g1, t1), (ms3, g3, t3) = _cell(row["stage1"]), _cell(row["stage3"])
        cells += [f"{ms1} / {g1}", f"{ms3} / {g3}"]
        for m in ("meta_auxiliary", "ensemble"):
            ok = None not in (t1, t2.get(m), t3)
            cells.append(f"{gpu_hours(row['batch'], t1, t2[m], t3):.0f}" if ok else "-")
        print("| " + " | ".join(cells) + " |")
    print(f"\nGPU-h = ceil({N_TRAIN}/B)·(200·t1 + 100·t2 + 50·t3)/3600 with each stage's min step time; "
          "peak = torch.cuda.max_memory_allocated (CPU dry run: RSS)")
    print_stage_hours(rows, meths)


def stage_hours(batch: int, t: float, stage: str) -> float:
    """GPU-hours of one stage at paper size: ceil(28000/B) steps × its epochs × its step time."""
    return math.ceil(N_TRAIN / batch) * EPOCHS[stage] * t / 3600


def print_stage_hours(rows: list[dict], meths: list[str]) -> None:
    """Where the time goes: projected GPU-hours per stage (and stage 2 per attack), and each stage's share."""
    print("\n| dtype | B | " + " | ".join(["stage 1"] + [f"stage 2 ({m})" for m in meths] + ["stage 3"])
          + " | largest share |\n|" + "---|" * (len(meths) + 5))
    for row in rows:
        cells, hours = [row["dtype"], str(row["batch"])], {}
        for key, stage in [("stage1", "stage1"), *[(f"stage2_{m}", "stage2") for m in meths], ("stage3", "stage3")]:
            _, _, t = _cell(row[key])
            hours[key] = None if t is None else stage_hours(row["batch"], t, stage)
            cells.append("OOM" if t is None else f"{hours[key]:.1f}")
        main = {k: v for k, v in hours.items() if v is not None and k in ("stage1", "stage3", "stage2_meta_auxiliary")}
        total = sum(main.values())
        top = max(main, key=main.get) if main else None
        cells.append(f"{top} {100 * main[top] / total:.0f} %" if top and total else "-")
        print("| " + " | ".join(cells) + " |")
    print("(stage 2 with the meta-auxiliary attack: its K surrogates' second-order backward is the ratio meta/ens above)")


if __name__ == "__main__":
    sys.exit(main())
