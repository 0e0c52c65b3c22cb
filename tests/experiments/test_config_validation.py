"""Every constraint the code relies on is refused when the config loads (issue 19, item 4), naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from erasablemask.experiments.config.groups import ConfigError
from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.data.attributes import ATTRIBUTES


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # a subset reached the first step as a tensor-shape error (the data sets deliver all 13 labels)
        ("model.attributes=[Bald, Bangs, Male]", r"model\.attributes must be all 13 attributes in this order"),
        ("model.attributes=[Bald, Bald]", r"model\.attributes lists \['Bald'\] more than once"),
        ("model.attributes=[Bald, Hat]", r"model\.attributes has unknown names \['Hat'\]"),
        ("stage2.lambda_adv=.inf", r"stage2\.lambda_adv: Input should be a finite number"),
        ("stage1.lambda_rec=.nan", r"stage1\.lambda_rec: Input should be a finite number"),
        ("stage3.optimizer.lr=.inf", r"stage3\.optimizer\.lr: Input should be a finite number"),
        ("stage1.epochs=0", r"stage1\.epochs: Input should be greater than or equal to 1"),
        ("stage3.epochs=-1", r"stage3\.epochs: Input should be greater than or equal to 1"),
        (
            "data.image_size=65",
            r"data\.image_size=65 does not suit model\.enc_layers=4 / model\.dis_layers=4.*"
            r"multiple of 2\*\*4=16",
        ),
        ("attack.surrogates=[nope]", r"attack\.surrogates: unknown FR model\(s\) \['nope'\]; registered: \["),
        ("attack.black_box=[mini_irse_cos_s0, nope2]", r"attack\.black_box: unknown FR model\(s\) \['nope2'\]"),
        (
            "attack.surrogates=[mini_iresnet_arc_s0, mini_iresnet_arc_s0]",
            r"attack\.surrogates lists \['mini_iresnet_arc_s0'\] more than once",
        ),
    ],
)
def test_bad_values_are_refused_when_the_config_loads(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("miniworld_demo", [override])


def test_values_the_architecture_accepts_still_load() -> None:
    cfg = load_config("miniworld_demo", ["data.image_size=80", "stage2.lambda_adv=0", "stage1.epochs=1"])
    assert (cfg.data.image_size, cfg.stage2.lambda_adv, cfg.stage1.epochs) == (80, 0.0, 1)
    assert cfg.model.attributes == list(ATTRIBUTES)
    # the paper's 256² with 5 layers (a multiple of 32) and 5 layers at 64 pass; 5 layers at 80 do not
    load_config("paper", [])
    with pytest.raises(ConfigError, match=r"multiple of 2\*\*5=32"):
        load_config("paper", ["data.image_size=80"])


def test_a_validator_message_is_one_line_without_the_section_dump() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("miniworld_demo", ["attack.surrogates=[nope]"])
    assert "Value error" not in str(err.value) and "'target'" not in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"config file '.*cfg\.yaml' is empty; write the keys to change"),
        (b"# only a comment\n", r"config file '.*cfg\.yaml' is empty"),
        (b"{}\n", r"config file '.*cfg\.yaml' is empty"),
        (
            b"- a\n- b\n",
            r"config file '.*cfg\.yaml' must hold a mapping \(key: value lines\) at the top level, not a list",
        ),
        (b"just a string\n", r"config file '.*cfg\.yaml' must hold a mapping .* not a str"),
        (bytes(range(256)), r"config file '.*cfg\.yaml' is not UTF-8 text \(byte 128"),
        (b"seed: 1\n\x00\x00", r"config file '.*cfg\.yaml' holds NUL bytes"),
        (b"seed: [1\n", r"config file '.*cfg\.yaml' is not valid YAML"),
    ],
)
def test_empty_binary_and_non_mapping_files_are_refused_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
