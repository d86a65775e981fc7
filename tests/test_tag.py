"""python -m tools.tag and model.tagging on real decoded files of every format."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import WITHOUT_TENSORFLOW, new_rng

from model import MSD_TAGS
from model.audio import load_audio
from model.tagger import Tagger, cpu_has_bfloat16
from model.tagging import FileTags, tag_file
from tagstream.errors import ExitStatus
from tools.tag import main


def _song(seconds: float, sr: int, channels: int) -> np.ndarray:
    """A few seconds of kick-and-chords-like audio, the same music at any rate."""
    t = np.arange(int(seconds * sr)) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (196.0, 246.9, 293.7)) / 3
    since_beat = t % 0.5
    kick = np.sin(2 * np.pi * (60 + 200 * np.exp(-since_beat * 40)) * since_beat)
    mono = 0.3 * chord * (1 + 0.3 * np.sin(2 * np.pi * 0.5 * t)) + 0.5 * kick * np.exp(
        -since_beat * 12
    )
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


FORMATS = [
    ("song.wav", 16000, 1, {}),
    ("stereo.wav", 44100, 2, {"subtype": "PCM_16"}),
    ("song.flac", 22050, 1, {}),
    ("song.ogg", 48000, 2, {}),
    ("song.mp3", 44100, 2, {}),
]


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    for name, sr, channels, kwargs in FORMATS:
        sf.write(folder / name, _song(7.0, sr, channels), sr, **kwargs)
    sf.write(folder / "short.wav", _song(1.0, 16000, 1), 16000)
    noise = bytes(new_rng().integers(0, 255, 4000))
    (folder / "corrupt.mp3").write_bytes(b"\xff\xfb\x90\x00" + noise)
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "silence.wav", np.zeros((16000 * 4, 1), np.float32), 16000)
    return folder


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([*argv, "--no-progress"], stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_json_output_for_every_format(audio_files: Path) -> None:
    paths = [str(audio_files / name) for name, *_ in FORMATS]
    status, out, err = _run([*paths, "--json"])
    assert status == ExitStatus.OK, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["path"] for line in lines] == paths
    for line in lines:
        assert set(line) == {"path", "duration_s", "model", "tags", "windows"}
        assert line["model"] == "MSD_musicnn"
        assert abs(line["duration_s"] - 7.0) < 0.05
        assert list(line["tags"]) == list(MSD_TAGS)
        assert [w["start_s"] for w in line["windows"]] == [0.0, 2.992]  # 3 s windows, no overlap
        for window in line["windows"]:
            assert list(window["tags"]) == list(MSD_TAGS)
            assert all(0.0 <= p <= 1.0 for p in window["tags"].values())
        mean = np.mean([list(w["tags"].values()) for w in line["windows"]], axis=0)
        np.testing.assert_allclose(list(line["tags"].values()), mean, atol=2e-6)
    # The same music decoded from each format and rate gets nearly the same tags.
    reference = np.array(list(lines[0]["tags"].values()))
    for line in lines[1:]:
        np.testing.assert_allclose(list(line["tags"].values()), reference, atol=0.05)


def test_text_output_prints_top_k(audio_files: Path) -> None:
    status, out, _ = _run([str(audio_files / "song.wav"), "--top", "3"])
    assert status == ExitStatus.OK
    path, duration, tags = out.strip().split("\t")
    assert path.endswith("song.wav") and duration == "7.0s"
    assert len(tags.split(", ")) == 3


def test_hop_seconds_overlaps_windows(audio_files: Path) -> None:
    status, out, _ = _run([str(audio_files / "song.wav"), "--json", "--hop-seconds", "1"])
    assert status == ExitStatus.OK
    starts = [w["start_s"] for w in json.loads(out)["windows"]]
    assert starts == [0.0, 0.992, 1.984, 2.976, 3.968]


def test_bad_files_fail_alone_with_one_line_each(audio_files: Path) -> None:
    names = ["missing.wav", "corrupt.mp3", "empty.wav", "short.wav", "song.wav"]
    status, out, err = _run([str(audio_files / n) for n in names])
    assert status == ExitStatus.ERROR
    assert len(out.splitlines()) == 1 and "song.wav" in out
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    assert "missing.wav: no such file" in errors[0]
    assert "corrupt.mp3: cannot decode" in errors[1]
    assert "empty.wav: cannot decode" in errors[2]
    assert "short.wav: too short (1.00 s)" in errors[3] and "--pad" in errors[3]


def test_pad_tags_short_files_with_a_warning(audio_files: Path) -> None:
    status, out, err = _run([str(audio_files / "short.wav"), "--pad", "--json"])
    assert status == ExitStatus.OK
    assert "padded with silence" in err
    assert len(json.loads(out)["windows"]) == 1


def test_silence_is_tagged_with_a_warning(
    audio_files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, _ = _run([str(audio_files / "silence.wav")])
    assert status == ExitStatus.OK
    assert "silent" in caplog.text


def test_bad_config_and_model_exit_codes(audio_files: Path, tmp_path: Path) -> None:
    status, _, err = _run([str(audio_files / "song.wav"), "--top", "0"])
    assert status == ExitStatus.USAGE
    assert err.strip() == "error: tagging.top_k: must be greater than 0, got 0"
    status, _, err = _run([str(audio_files / "song.wav"), "--model", str(tmp_path / "nope")])
    assert status == ExitStatus.UNAVAILABLE
    assert "neither a pretrained name" in err and len(err.strip().splitlines()) == 1


def test_vgg_model_by_name(audio_files: Path) -> None:
    status, out, _ = _run([str(audio_files / "song.wav"), "--json", "--model", "MSD_vgg"])
    assert status == ExitStatus.OK
    assert json.loads(out)["model"] == "MSD_vgg"


def test_hop_shorter_than_a_frame_is_a_usage_error(audio_files: Path) -> None:
    status, _, err = _run([str(audio_files / "song.wav"), "--hop-seconds", "0.001"])
    assert status == ExitStatus.USAGE
    assert err.strip() == "error: hop_seconds=0.001 is shorter than one mel frame"


def test_many_files_are_tagged_in_order_while_decoding_ahead(audio_files: Path) -> None:
    names = ["song.flac", "missing.wav", "song.wav", "short.wav", "song.ogg"] * 3
    status, out, err = _run([*(str(audio_files / n) for n in names), "--json"])
    assert status == ExitStatus.ERROR
    tagged = [json.loads(line)["path"] for line in out.splitlines()]
    assert tagged == [str(audio_files / n) for n in names if n.startswith("song")]
    assert err.count("error:") == 6


@pytest.mark.skipif(
    not cpu_has_bfloat16(),
    reason="this CPU has no bfloat16 instructions (AVX512_BF16 or AMX): --precision bfloat16 "
    "would run in float32 and the comparison could not fail",
)
def test_bfloat16_precision_tags_like_float32(audio_files: Path) -> None:
    """--precision bfloat16 is process-wide in TensorFlow, so it runs in a child process."""
    path = str(audio_files / "stereo.wav")
    child = subprocess.run(
        [sys.executable, "-m", "tools.tag", path, "--json", "--no-progress",
         "--precision", "bfloat16"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == ExitStatus.OK, child.stderr[-2000:]
    status, out, err = _run([path, "--json"])
    assert status == ExitStatus.OK, err
    bfloat16, float32 = json.loads(child.stdout), json.loads(out)
    assert set(bfloat16) == set(float32)  # the same JSON fields
    tags = [np.array(list(result["tags"].values())) for result in (bfloat16, float32)]
    difference = np.abs(tags[0] - tags[1])
    assert difference.max() < 0.05
    assert difference.max() > 1e-5  # the flag reached the model: the arithmetic changed


# ---------------------------------------------------------------------------
# The library: model.tagging
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("block_seconds", [0.37, 10.0])
def test_tag_file_windows_are_tag_audio_s(
    audio_files: Path, tagger: Tagger, block_seconds: float
) -> None:
    """Decoding and windowing block by block gives Tagger.tag_audio's windows of the whole file."""
    path = audio_files / "song.ogg"
    result = tag_file(path, tagger, hop_seconds=1.0, block_seconds=block_seconds)
    assert isinstance(result, FileTags)
    assert (result.path, result.model, result.padded, result.silent) == (
        str(path),
        "MSD_musicnn",
        False,
        False,
    )
    starts, probabilities = tagger.tag_audio(load_audio(path), hop_frames=62)
    assert [w.start_s for w in result.windows] == [round(float(s), 3) for s in starts]
    ours = np.array([list(w.tags.values()) for w in result.windows])
    np.testing.assert_allclose(ours, probabilities, rtol=0, atol=1e-4)
    np.testing.assert_allclose(list(result.tags.values()), probabilities.mean(axis=0), atol=1e-4)


def _peak_traced_bytes(path: Path, tagger: Tagger) -> tuple[int, FileTags]:
    tracemalloc.start()
    try:
        result = tag_file(path, tagger)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_tag_file_memory_does_not_grow_with_length(tmp_path: Path, tagger: Tagger) -> None:
    """Files are read in blocks: a 10-minute file peaks where a 100-second one does."""
    ten_seconds = _song(10.0, 16000, 1)
    paths = {}
    for seconds in (100, 600):
        paths[seconds] = tmp_path / f"{seconds}.wav"
        sf.write(paths[seconds], np.tile(ten_seconds, (seconds // 10, 1)), 16000, subtype="PCM_16")
    tag_file(paths[100], tagger)  # warm up: TensorFlow's and librosa's one-time allocations
    short_peak, _ = _peak_traced_bytes(paths[100], tagger)
    long_peak, result = _peak_traced_bytes(paths[600], tagger)
    assert len(result.windows) == 200
    whole_file = 600 * 16000 * 4  # what decoding it at once would hold (float32)
    assert long_peak < whole_file / 2, f"peak {long_peak / 1e6:.1f} MB"
    # Only the per-window results grow (200 windows x 50 tags): well under 25 %.
    assert long_peak < 1.25 * short_peak, (long_peak, short_peak)


def _strict_json(line: str) -> dict:
    """Parse one line of JSON, failing on NaN and Infinity (which JSON does not have)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"invalid JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def test_nan_inf_and_huge_samples_are_handled_like_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Scattered NaN does not turn music into silence; huge samples never print bare NaN."""
    music = _song(7.0, 44100, 1)[:, 0]
    scattered = music.copy()
    scattered[::997] = np.nan
    scattered[1000] = np.inf
    huge = music * np.float32(1e30)
    for name, y in (("clean", music), ("scattered", scattered), ("huge", huge)):
        sf.write(tmp_path / f"{name}.wav", y, 44100, subtype="FLOAT")
    names = ("clean", "scattered", "huge")
    status, out, err = _run([*(str(tmp_path / f"{name}.wav") for name in names), "--json"])
    assert status == ExitStatus.OK, err
    clean, scattered_tags, huge_tags = (_strict_json(line) for line in out.splitlines())
    reference = np.array(list(clean["tags"].values()))
    for result in (scattered_tags, huge_tags):
        values = np.array(list(result["tags"].values()))
        assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    np.testing.assert_allclose(list(scattered_tags["tags"].values()), reference, atol=0.05)
    assert "silent" not in caplog.text
    assert "replaced=" in caplog.text


_TAG_WITHOUT_TENSORFLOW = (
    WITHOUT_TENSORFLOW
    + """
from tools.tag import main

sys.exit(main(sys.argv[1:]))
"""
)


def test_onnx_backend_tags_like_tensorflow_without_importing_it(audio_files: Path) -> None:
    """``tools.tag --backend onnxruntime``: same tags within 1e-5, TensorFlow never imported."""
    path = str(audio_files / "song.flac")
    status, out, err = _run([path, "--json", "--backend", "tensorflow"])
    assert status == 0, err
    reference = json.loads(out)
    status, out, _ = _run([path, "--json", "--backend", "onnxruntime"])
    assert status == 0
    fast = json.loads(out)
    for tag in MSD_TAGS:
        assert abs(fast["tags"][tag] - reference["tags"][tag]) < 1e-5
    child = subprocess.run(
        [sys.executable, "-c", _TAG_WITHOUT_TENSORFLOW, path, "--json", "--backend",
         "onnxruntime", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    assert json.loads(child.stdout)["tags"] == fast["tags"]
