"""`erasablemask claims`: input checked before any run starts."""

from __future__ import annotations


def test_claims_command_refuses_bad_input_before_running(tmp_path, capsys):
    from erasablemask.platform.cli.main import main

    assert main(["claims", "miniworld_demo", "--out", str(tmp_path), "--methods", "pgd"]) == 2
    assert "--methods ['pgd']: choose from" in capsys.readouterr().err
    assert main(["claims", "miniworld_demo", "--out", str(tmp_path), "--seeds", "1", "1"]) == 2
    assert not any(tmp_path.iterdir())
