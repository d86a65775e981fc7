"""config.toml loading: every key checked, errors name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config


def test_repository_config_matches_built_in_defaults() -> None:
    # config.toml documents every setting with its default value.
    assert load_config(DEFAULT_CONFIG_PATH) == Config()


def test_every_setting_is_in_config_toml() -> None:
    import tomllib

    data = tomllib.loads(DEFAULT_CONFIG_PATH.read_text())
    for section in dataclasses.fields(Config):
        keys = {f.name for f in dataclasses.fields(getattr(Config(), section.name))}
        assert set(data[section.name]) == keys, section.name


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[inference]\nhop_seconds = "fast"\n', "inference.hop_seconds: expected a number"),
        ("[inference]\nhop_sconds = 1.0\n", "inference.hop_sconds: unknown setting"),
        ("[inferense]\n", "inferense: unknown section"),
        ("[tagging]\ntop_k = 2.5\n", "tagging.top_k: expected an integer"),
        ("[tagging]\npad_short = 1\n", "tagging.pad_short: expected true or false"),
        ('[model]\ndevice = "tpu"\n', "model.device: expected one of auto, cpu, gpu"),
        ('[model]\nprecision = "float16"\n', "model.precision: expected one of float32, bfloat16"),
        ("[inference]\nhop_seconds = 0\n", "inference.hop_seconds: must be greater than 0"),
        ("[subscribe]\nendpoints = [1]\n", "subscribe.endpoints: expected a list of strings"),
        ("inference = 3\n", "inference: expected a [section]"),
        ("[model\n", "not valid TOML"),
    ],
)
def test_bad_config_fails_with_one_line_naming_the_key(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_overrides_go_through_the_same_checks(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[inference]\nhop_seconds = 1.0\n")
    cfg = load_config(path, overrides={"inference.window_seconds": 4, "model.name": None})
    assert cfg.inference.hop_seconds == 1.0
    assert cfg.inference.window_seconds == 4.0
    assert isinstance(cfg.inference.window_seconds, float)
    with pytest.raises(ConfigError, match=r"inference\.max_batch: expected an integer"):
        load_config(path, overrides={"inference.max_batch": "many"})


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass --config PATH"):
        load_config(tmp_path / "nope.toml")


def test_environment_variable_selects_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[tagging]\ntop_k = 9\n")
    monkeypatch.setenv("TAGSTREAM_CONFIG", str(path))
    assert load_config().tagging.top_k == 9
