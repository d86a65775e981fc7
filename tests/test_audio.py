"""The one audio path: decoding block by block, downmix, finite samples, resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.audio import (
    SAMPLE_LIMIT,
    AudioError,
    AudioReader,
    Resampler,
    finite_samples,
    iter_audio_blocks,
    load_audio,
    resample,
    to_mono,
)
from tagstream.errors import ExitStatus, UnavailableError


def _noise(rng: np.random.Generator, seconds: float, sr: int, channels: int) -> np.ndarray:
    return rng.uniform(-0.8, 0.8, (round(seconds * sr), channels)).astype(np.float32)


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resample_keeps_a_tone(orig_sr: int) -> None:
    t = np.arange(orig_sr) / orig_sr
    y = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = resample(y, orig_sr=orig_sr, target_sr=16000)
    assert out.dtype == np.float32
    assert abs(len(out) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 1000) < 2


@pytest.mark.parametrize("block", [1, 441, 4410, 100_000])
@pytest.mark.parametrize("orig_sr", [8000, 44100, 16000])
def test_streaming_resampler_equals_offline(
    rng: np.random.Generator, orig_sr: int, block: int
) -> None:
    y = _noise(rng, 2.3, orig_sr, 1)[:, 0]
    resampler = Resampler(orig_sr, 16000)
    pieces = [resampler.push(y[i : i + block]) for i in range(0, len(y), block)]
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    offline = resample(y, orig_sr=orig_sr, target_sr=16000)
    assert streamed.dtype == np.float32
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, rtol=0, atol=1e-6)
    # After flush the resampler starts a new signal: the same input gives the same output.
    again = np.concatenate([resampler.push(y), resampler.flush()])
    np.testing.assert_allclose(again, offline, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("rate", "channels", "subtype", "name"),
    [
        (44100, 2, "PCM_16", "a.wav"),
        (22050, 1, "PCM_24", "a.flac"),
        (48000, 3, "FLOAT", "a.wav"),
        (16000, 1, "PCM_16", "a.wav"),
    ],
)
def test_blocks_equal_the_whole_file(
    tmp_path: Path, rng: np.random.Generator, rate: int, channels: int, subtype: str, name: str
) -> None:
    """Decoding in blocks gives the whole-file decode, downmix and offline resampling."""
    path = tmp_path / name
    sf.write(path, _noise(rng, 3.1, rate, channels), rate, subtype=subtype)
    decoded, _ = sf.read(path, dtype="float32", always_2d=True)
    expected = resample(to_mono(decoded), orig_sr=rate, target_sr=16000)
    for block_seconds in (0.01, 0.37, 60.0):
        blocks = list(iter_audio_blocks(path, block_seconds=block_seconds, sample_rate=16000))
        np.testing.assert_allclose(np.concatenate(blocks), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(load_audio(path), expected, rtol=0, atol=1e-6)


def test_native_rate_blocks_have_the_asked_size(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "n.wav"
    sf.write(path, _noise(rng, 1.0, 22050, 2), 22050, subtype="FLOAT")
    with AudioReader(path) as reader:
        assert (reader.info.sample_rate, reader.info.channels) == (22050, 2)
        assert reader.sample_rate == 22050
        assert reader.info.duration_s == pytest.approx(1.0)
        sizes = [len(block) for block in reader.blocks(2205)]
    assert sizes == [2205] * 10


def test_offset_and_max_seconds(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "o.wav"
    y = _noise(rng, 3.0, 16000, 1)
    sf.write(path, y, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, max_seconds=1.0), y[:16000, 0])
    np.testing.assert_array_equal(
        load_audio(path, offset_seconds=0.5, max_seconds=1.0), y[8000:24000, 0]
    )
    np.testing.assert_array_equal(load_audio(path, offset_seconds=2.5), y[40000:, 0])


def test_non_finite_and_huge_samples_are_made_finite_before_resampling(tmp_path: Path) -> None:
    """One NaN fed to the resampler would spread over the whole signal; it is replaced first."""
    rate = 44100
    t = np.arange(3 * rate) / rate
    y = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y[::997] = np.nan
    y[5000] = np.inf
    y[6000] = 3e38
    path = tmp_path / "nan.wav"
    sf.write(path, y, rate, subtype="FLOAT")
    with AudioReader(path, sample_rate=16000) as reader:
        out = np.concatenate(list(reader.blocks(4410)))
        replaced = reader.samples_replaced
    assert replaced == len(y[::997]) + 1
    assert np.isfinite(out).all()
    assert np.abs(out).max() <= 2 * SAMPLE_LIMIT  # the filter may ring a little past the limit
    assert np.sqrt(np.mean(out**2)) > 0.3  # still the tone, not silence


def test_finite_samples_counts_and_clips() -> None:
    y = np.array([0.5, np.nan, np.inf, -np.inf, 1e30, -1e30], np.float32)
    out, replaced = finite_samples(y)
    assert replaced == 3
    np.testing.assert_array_equal(out, [0.5, 0.0, 1.0, -1.0, SAMPLE_LIMIT, -SAMPLE_LIMIT])
    clean = np.zeros(4, np.float32)
    assert finite_samples(clean)[0] is clean


def test_errors_name_the_file_and_exit_3(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.flac").write_bytes(b"not audio at all")
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), 16000)
    cases = {
        "missing.wav": "no such file",
        "empty.wav": "cannot decode",
        "junk.flac": "cannot decode",
        "zero.wav": "contains no audio",
        ".": "is a folder",
    }
    for name, message in cases.items():
        with pytest.raises(AudioError, match=message) as info:
            load_audio(tmp_path / name)
        assert isinstance(info.value, UnavailableError | ValueError)
        assert info.value.status == ExitStatus.UNAVAILABLE
