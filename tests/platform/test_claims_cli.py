"""`erasablemask claims`: input checked before any run starts."""

from __future__ import annotations


def test_claims_command_refuses_bad_input_before_running(tmp_path, capsys):
    from erasablemask.platform.cli.main import main

    assert main(["claims", "miniworld_demo", "--out", str(tmp_path), "--methods", "pgd"]) == 2
    assert "--methods ['pgd']: choose from" in capsys.readouterr().err
    assert main(["claims", "miniworld_demo", "--out", str(tmp_path), "--seeds", "1", "1"]) == 2
    assert not any(tmp_path.iterdir())


TINY = [
    "data.image_size=64", "data.miniworld.n_identities=10", "data.miniworld.images_per_identity=16",
    "data.miniworld.heldout_identities=4", "data.miniworld.fr_epochs=1", "data.miniworld.fr_extra_identities=20",
    "model.enc_dim=8", "model.dec_dim=8", "model.dis_dim=8", "model.dis_fc_dim=16", "model.enc_layers=3",
    "model.dec_layers=3", "model.dis_layers=3", "stage1.epochs=1", "stage2.epochs=1", "stage3.epochs=1",
    "stage1.batch_size=8", "stage2.batch_size=4", "stage3.batch_size=4",
    "attack.surrogates=[mini_iresnet_arc_s0,mini_incept_arc_s0]", "attack.black_box=[mini_mobileface_arc_s0]",
    "evaluation.transforms=[none]", "evaluation.max_images=8",
]


def test_claims_methods_of_a_seed_share_one_stage1(tmp_path, capsys):
    """Two attack methods, one seed: stage 1 is trained once into the cache and both runs start stage 2 from it."""
    import pandas as pd

    from erasablemask.platform.cli.main import main

    args = ["claims", "miniworld_demo", "--out", str(tmp_path), "--seeds", "0", "--methods", "meta_auxiliary",
            "ensemble", "--no-track", "--n-boot", "50", "--max-steps-per-epoch", "1"]
    for kv in TINY:
        args += ["--set", kv]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("stage 1 trained") == 1 and out.count("stage 1 reused") == 1
    keys = [p for p in (tmp_path / "stage1_cache").iterdir() if p.is_dir()]
    assert len(keys) == 1
    for method in ("meta_auxiliary", "ensemble"):
        run = tmp_path / f"seed0-{method}"
        assert not (run / "stage1").exists() and (run / "stage3").is_dir()
    table = pd.read_csv(tmp_path / "claims.csv")
    assert set(table["method"]) >= {"meta_auxiliary", "ensemble"}
