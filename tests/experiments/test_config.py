"""The config schema: paper defaults, overrides, and every class of bad value rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from erasablemask.experiments.config.loading import CONFIG_DIR, ConfigError, load_config
from erasablemask.platform.cli.main import main


def test_defaults_are_the_papers_values() -> None:
    cfg = load_config()
    s1, s2 = cfg.stage1, cfg.stage2
    assert (s1.lambda_rec, s1.lambda_att, s1.lambda_G) == (150, 10, 1)
    assert (s2.lambda_att, s2.lambda_rec, s2.lambda_G, s2.lambda_adv, s2.lambda_era, s2.lambda_perb) == (
        10, 150, 1, 200, 150, 1,
    )
    assert cfg.protection.beta == 0.5 and s2.sigma1 == 30
    assert (s1.epochs, s2.epochs, cfg.stage3.epochs) == (200, 100, 50)
    assert s1.optimizer.lr == s2.optimizer.lr == cfg.stage3.optimizer.lr == 2e-5
    np_ = cfg.noise_pool
    assert (np_.jpeg_quality, np_.gaussian_variance, np_.resize_factor) == (50, 0.003, 0.25)
    assert len(cfg.model.attributes) == 13 and cfg.data.image_size == 256


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_validates(path: Path) -> None:
    load_config(path)


def test_dotted_overrides_parse_values_as_yaml() -> None:
    cfg = load_config(None, ["stage2.lambda_adv=100", "protection.gamma=0.2", "attack.method=ensemble"])
    assert cfg.stage2.lambda_adv == 100.0 and cfg.protection.gamma == 0.2
    assert cfg.attack.method == "ensemble"


@pytest.mark.parametrize(
    "override, key_path, hint",
    [
        ("stage2.lambda_advv=1", "stage2.lambda_advv", "unknown key"),
        ("stage1.epochs=many", "stage1.epochs", "integer"),
        ("protection.beta=1.5", "protection.beta", "less than or equal to 1"),
        ("protection.gamma=-0.1", "protection.gamma", "greater than or equal to 0"),
        ("stage2.lambda_era=-1", "stage2.lambda_era", "greater than or equal to 0"),
        ("stage3.epochs=-5", "stage3.epochs", "greater than or equal to 0"),
        ("stage1.optimizer.lr=-0.1", "stage1.optimizer.lr", "greater than or equal to 0"),
        ("attack.method=pgd", "attack.method", "meta_auxiliary"),
        ("noise_pool.per=pixel", "noise_pool.per", "batch"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override: str, key_path: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key_path in str(err.value) and hint in str(err.value)


def test_model_both_surrogate_and_black_box_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\['irse50'\] listed as both surrogate and black-box"):
        load_config(None, ["attack.black_box=[irse50, mobile_face]"])


def test_unknown_fr_model_is_refused_with_the_registry() -> None:
    with pytest.raises(ConfigError, match=r"unknown FR model\(s\) \['resnet9000'\]; registered: \["):
        load_config(None, ["attack.surrogates=[ir152, resnet9000]"])


def test_unknown_yaml_key_in_a_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage2:\n  lamda_adv: 3\n")
    with pytest.raises(ConfigError, match=r"stage2\.lamda_adv: unknown key"):
        load_config(bad)


def test_missing_config_file_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="not found; give a YAML path or one of"):
        load_config("no_such_config")


def test_config_show_prints_the_resolved_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", str(CONFIG_DIR / "paper.yaml"), "--set", "stage2.lambda_adv=123"]) == 0
    out = capsys.readouterr().out
    assert "lambda_adv: 123.0" in out and "config digest:" in out


def test_config_show_exits_2_on_a_bad_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", str(CONFIG_DIR / "paper.yaml"), "--set", "protection.beta=2"]) == 2
    assert "protection.beta" in capsys.readouterr().err
