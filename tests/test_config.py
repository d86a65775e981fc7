"""config.toml loading: every key checked, errors name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config import Config, ConfigError, config_path, load_config

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config.toml"


def test_repository_config_matches_built_in_defaults() -> None:
    # config.toml documents every setting with its default value.
    assert load_config(REPO_CONFIG) == Config()


def test_every_setting_is_in_config_toml() -> None:
    import tomllib

    data = tomllib.loads(REPO_CONFIG.read_text())
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
        ("[inference]\nhop_seconds = inf\n", "inference.hop_seconds: expected a finite number"),
        ("[inference]\nhop_seconds = nan\n", "inference.hop_seconds: expected a finite number"),
        ("[inference]\nmax_batch = 1000000000\n", "inference.max_batch: must be at most 1024"),
        ("[inference]\npublish_hwm = 4294967296\n", "inference.publish_hwm: must be at most"),
        ("[metrics]\nworker_port = 70000\n", "metrics.worker_port: must be at most 65535"),
        ("[metrics]\nworker_port = -1\n", "metrics.worker_port: must be 0 or more"),
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
    with pytest.raises(ConfigError, match="settings file not found; check the path"):
        load_config(tmp_path / "nope.toml")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[model]\nname = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def test_which_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config, then $TAGSTREAM_CONFIG, then ./config.toml, then the user's file, then defaults."""
    monkeypatch.delenv("TAGSTREAM_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert config_path() is None
    assert load_config() == Config()
    user = tmp_path / "xdg" / "tagstream" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[tagging]\ntop_k = 7\n")
    assert load_config().tagging.top_k == 7
    (work / "config.toml").write_text("[tagging]\ntop_k = 8\n")
    assert load_config().tagging.top_k == 8
    env = tmp_path / "env.toml"
    env.write_text("[tagging]\ntop_k = 9\n")
    monkeypatch.setenv("TAGSTREAM_CONFIG", str(env))
    assert load_config().tagging.top_k == 9
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[tagging]\ntop_k = 10\n")
    assert load_config(explicit).tagging.top_k == 10


def test_config_errors_are_usage_errors() -> None:
    from tagstream.errors import ExitStatus, TagstreamError

    assert issubclass(ConfigError, TagstreamError)
    assert ConfigError("x").status is ExitStatus.USAGE


def test_environment_variable_selects_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[tagging]\ntop_k = 9\n")
    monkeypatch.setenv("TAGSTREAM_CONFIG", str(path))
    assert load_config().tagging.top_k == 9
