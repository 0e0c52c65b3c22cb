"""The config schema: paper defaults, config groups, overrides, the digest, and every class of bad value rejected."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from erasablemask.experiments.config.groups import GROUP_KEYS, owner, read_option
from erasablemask.experiments.config.loading import CONFIG_DIR, ConfigError, dump_config, load_config
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
        ("stage3.epochs=-5", "stage3.epochs", "greater than or equal to 1"),
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


# ---------------------------------------------------------------- config groups

BEFORE_GROUPS = Path(__file__).parent / "configs_before_groups"
GROUP_OPTIONS = sorted((p.parent.name, p.stem) for g in GROUP_KEYS for p in (CONFIG_DIR / g).glob("*.yaml"))


@pytest.mark.parametrize("name", ["paper", "miniworld_demo"])
def test_composed_shipped_configs_resolve_exactly_as_before_groups(name: str) -> None:
    composed, before = load_config(name), load_config(BEFORE_GROUPS / f"{name}.yaml")
    assert composed.model_dump(mode="json") == before.model_dump(mode="json")
    assert composed.digest() == before.digest()
    assert "groups" in (CONFIG_DIR / f"{name}.yaml").read_text()


def test_paper_yaml_states_only_its_data_and_zoo_choices() -> None:
    cfg = load_config("paper")
    assert cfg.groups == {"data": "celebahq", "zoo": "paper"}
    assert yaml.safe_load((CONFIG_DIR / "paper.yaml").read_text()) == {"groups": {"data": "celebahq", "zoo": "paper"}}
    defaults = load_config().model_dump(mode="json")
    differ = {k for k, v in cfg.model_dump(mode="json").items() if v != defaults[k]}
    assert differ == {"data", "attack"}  # everything else is the schema default = the paper's value


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=lambda v: str(v))
def test_every_group_option_validates_and_sets_only_its_groups_keys(group: str, option: str) -> None:
    cfg = load_config(None, [f"{group}={option}"])
    assert cfg.groups == {group: option}
    tree = read_option(CONFIG_DIR, group, option)  # raises if it sets another group's keys
    assert tree, f"{group}/{option}.yaml is empty"


def test_every_group_has_an_option() -> None:
    assert all(any((CONFIG_DIR / g).glob("*.yaml")) for g in GROUP_KEYS), "a group folder without options"


def test_each_key_path_belongs_to_the_group_with_the_longest_prefix() -> None:
    assert owner("attack.surrogates") == "zoo" and owner("attack.black_box") == "zoo"
    assert owner("attack.target.mode") == "data" and owner("data.miniworld.n_identities") == "data"
    assert owner("attack.method") == "attack" and owner("compute.fault_injection.stage") == "compute"
    assert owner("stage1.epochs") is None and owner("attackers") is None


def test_groups_then_file_then_dotted_overrides_later_wins() -> None:
    demo = load_config("miniworld_demo")
    assert demo.model.enc_dim == 16 and demo.stage1.epochs == 13
    swapped = load_config("miniworld_demo", ["model=attgan"])  # --set group=option replaces the file's choice
    assert swapped.model.enc_dim == 64 and swapped.stage1.epochs == 13 and swapped.groups["model"] == "attgan"
    # Dotted overrides come after the groups, whatever their order on the command line.
    for order in (["model.enc_dim=32", "model=attgan"], ["model=attgan", "model.enc_dim=32"]):
        assert load_config("miniworld_demo", order).model.enc_dim == 32
    # The file's own keys beat its groups: the demo's target selection survives data=miniworld.
    assert load_config("miniworld_demo", ["data=miniworld"]).attack.target.selection == "typical"
    # A mapping after group= is an ordinary section override, not a group choice.
    assert load_config("miniworld_demo", ["data={image_size: 128}"]).data.image_size == 128


def test_unknown_group_or_option_is_refused_naming_what_is_available(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set data=minworld: config group 'data' has no option 'minworld'; "
                                          r"available: \['celebahq', 'miniworld'\]"):
        load_config("miniworld_demo", ["data=minworld"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: {dataset: miniworld}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config group 'dataset'; groups: \['data', 'model', "):
        load_config(bad)
    bad.write_text("groups: [miniworld]\n")
    with pytest.raises(ConfigError, match="'groups' must map group to option"):
        load_config(bad)


def test_a_group_option_setting_another_groups_keys_is_refused(tmp_path: Path) -> None:
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "greedy.yaml").write_text("attack: {surrogates: [ir152, irse50], method: ensemble}\n")
    with pytest.raises(ConfigError, match=r"greedy.yaml' sets \['attack.method'\], which group 'zoo' does not own"):
        read_option(tmp_path, "zoo", "greedy")


def test_config_show_lists_the_chosen_groups_and_prints_the_same_body(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "miniworld_demo", "--set", "compute=gpu"]) == 0
    out = capsys.readouterr().out
    assert "# config groups: data=miniworld model=mini zoo=mini compute=gpu\n" in out
    before = load_config(BEFORE_GROUPS / "miniworld_demo.yaml", ["compute.use_gpu=true"])
    assert out.startswith(dump_config(before)) and f"config digest: {before.digest()}" in out


# ---------------------------------------------------------------- digest


@pytest.mark.parametrize(
    "override",
    ["compute.num_workers=4", "compute.use_gpu=true", "compute.fault_injection.stage=1", "compute.max_failures=0",
     "tracking.run_dir=elsewhere", "tracking.tracking_uri=http://127.0.0.1:5000", "tracking.experiment_name=x",
     "compute=gpu"],
)
def test_compute_tracking_and_test_only_settings_leave_the_digest_alone(override: str) -> None:
    base = load_config("miniworld_demo")
    changed = load_config("miniworld_demo", [override])
    assert changed.model_dump(mode="json") != base.model_dump(mode="json")
    assert changed.digest() == base.digest()
    assert set(changed.flat()) == set(base.flat())  # MLflow params still record compute and tracking


@pytest.mark.parametrize("override", ["seed=1", "stage2.lambda_adv=100", "data.miniworld.fr_epochs=1", "zoo=paper"])
def test_what_the_experiment_computes_changes_the_digest(override: str) -> None:
    assert load_config("miniworld_demo", [override]).digest() != load_config("miniworld_demo").digest()


def test_digest_with_default_compute_and_tracking_is_the_hash_of_the_whole_config() -> None:
    """Run folders and caches named by digest before compute/tracking were left out stay valid."""
    for cfg in (load_config("paper"), load_config("miniworld_demo")):
        blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
        assert cfg.digest() == hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_remote_fr_models_must_be_models_of_the_experiment() -> None:
    cfg = load_config("miniworld_demo", ["compute.remote_fr.models=[mini_iresnet_arc_s0]"])
    assert cfg.compute.remote_fr.models == ["mini_iresnet_arc_s0"]
    with pytest.raises(ConfigError, match=r"compute.remote_fr.models: \['ir152'\] are not FR models of this experiment"):
        load_config("miniworld_demo", ["compute.remote_fr.models=[ir152]"])
