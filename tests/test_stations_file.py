"""Station files (``python -m streamer --stations``) are checked whole at start-up.

Every mistake is one line naming the file, the station and the key, with the fix, and
exit status 2 before anything is started; the example in ``deploy/`` is valid.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, free_port

from config import ConfigError, load_config
from streamer.stations import STATION_OPTIONS, load_stations
from tagstream.errors import ExitStatus

EXAMPLE = ROOT / "deploy" / "stations.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stations.toml"
    path.write_text(text)
    return path


def test_the_example_station_file_is_valid() -> None:
    stations = load_stations(EXAMPLE)
    assert [s.id for s in stations] == ["jazz-fm", "news-talk", "studio-out"]
    assert [s.kind for s in stations] == ["url", "url", "device"]
    talk = stations[1]
    assert (talk.silence_dbfs, talk.silence_seconds, talk.stall_timeout_seconds) == (-60, 20, 30)
    assert stations[2].device == "hw:1" and stations[2].channels == 2


def test_options_not_given_come_from_the_settings(tmp_path: Path) -> None:
    config = load_config(
        overrides={"content.silence_dbfs": -45.0, "streamer.stall_timeout_seconds": 7.0}
    )
    path = write(tmp_path, '[[station]]\nid = "a"\nurl = "http://h/a.mp3"\n')
    [station] = load_stations(path, config)
    assert station.silence_dbfs == -45.0
    assert station.stall_timeout_seconds == 7.0
    assert station.reconnect_max_seconds == config.streamer.reconnect_max_seconds
    assert station.device is None and station.url == "http://h/a.mp3"


def test_every_option_has_the_range_of_its_setting(tmp_path: Path) -> None:
    """An option refuses what config.toml refuses for the setting it overrides."""
    for option, (section, applies) in STATION_OPTIONS.items():
        source = 'device = "hw:1"' if applies == "device" else 'url = "http://h/a.mp3"'
        path = write(tmp_path, f'[[station]]\nid = "a"\n{source}\n{option} = 1000000000\n')
        with pytest.raises(ConfigError, match=f'station "a": {option}: must be at most'):
            load_stations(path)
        section_name = section.__name__.removesuffix("Config").lower()
        with pytest.raises(ConfigError, match="must be at most"):
            load_config(overrides={f"{section_name}.{option}": 1_000_000_000})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no stations; add a [[station]] table"),
        ('[station]\nid = "a"\n', "write each station as a [[station]] table"),
        ('title = "x"\n[[station]]\nid = "a"\nurl = "http://h/a"\n', "title: unknown"),
        ('[[station]]\nurl = "http://h/a"\n', 'station 1: id missing; give it one, e.g. id = "'),
        ("[[station]]\nid = 3\n", "station 1: id: expected a string, got 3"),
        ('[[station]]\nid = "a b\\u0007"\nurl = "http://h/a"\n', "printable"),
        ('[[station]]\nid = "a"\n', 'station "a": has neither url nor device; give one: url ='),
        (
            '[[station]]\nid = "a"\nurl = "http://h/a"\ndevice = "hw:1"\n',
            'station "a": has both url and device',
        ),
        ('[[station]]\nid = "a"\nurl = "radio.mp3"\n', "url: 'radio.mp3' is not a URL; give e.g."),
        ('[[station]]\nid = "a"\nurl = 5\n', 'station "a": url: expected a string, got 5'),
        (
            '[[station]]\nid = "a"\nurl = "http://h/a"\nsilense_dbfs = -60\n',
            'station "a": silense_dbfs: unknown setting; a station has id, url, device',
        ),
        (
            '[[station]]\nid = "a"\nurl = "http://h/a"\nsilence_dbfs = "quiet"\n',
            "station \"a\": silence_dbfs: expected a number, got 'quiet'",
        ),
        (
            '[[station]]\nid = "a"\nurl = "http://h/a"\nstall_timeout_seconds = 0\n',
            "stall_timeout_seconds: must be greater than 0, got 0",
        ),
        (
            '[[station]]\nid = "a"\ndevice = "hw:1"\nstall_timeout_seconds = 5\n',
            "stall_timeout_seconds: applies to url stations only; remove it",
        ),
        (
            '[[station]]\nid = "a"\nurl = "http://h/a"\nchannels = 2\n',
            "channels: applies to device stations only",
        ),
        (
            '[[station]]\nid = "a"\nurl = "http://h/a"\n[[station]]\nid = "a"\ndevice = ""\n',
            'station "a" is listed twice (stations 1 and 2); give each station its own id',
        ),
        ("[[station]\n", "not valid TOML"),
    ],
)
def test_a_bad_station_file_is_one_line_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_stations(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_streamer_refuses_a_bad_station_file_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, '[[station]]\nid = "a"\nurl = "http://h/a"\nsilence_dbfs = 3\n')
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "--stations", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert done.stderr.strip().splitlines() == [
        'error: stations.toml: station "a": silence_dbfs: must be at most -1, got 3.0'
    ]


def test_a_missing_station_file_names_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "--stations", str(tmp_path / "none.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert "none.toml: settings file not found; check the path" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_bad_endpoint_stops_every_station_with_exit_2(tmp_path: Path) -> None:
    """No retry mends a usage error: the stations stop and the error is the last line."""
    path = write(tmp_path, f'[[station]]\nid = "a"\nurl = "http://127.0.0.1:{free_port()}/a"\n')
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "--stations", str(path),
         "--endpoint", "tcp://127.0.0.1:notaport"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == ExitStatus.USAGE, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot connect to endpoint 'tcp://127.0.0.1:notaport'"), last
