"""model.content: music, speech or silence per 3 s window, and the window's level.

Signals are made here (silence, noise, tones, chords, synthetic music) or spoken by
Debian's espeak-ng; nothing from ../shared is used (benchmarks.content_eval does that).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
from helpers import ROOT

from model.content import (
    CONTENTS,
    FITTED,
    SAMPLE_RATE,
    ContentClassifier,
    ContentError,
    level_dbfs,
    spectral_change,
    talk_over_time,
)
from tagstream.errors import UnavailableError, UsageError
from tools.demo_audio import synthetic_music

WINDOW = 3 * SAMPLE_RATE
T = np.arange(WINDOW) / SAMPLE_RATE


def _needs_vad() -> None:
    import importlib.util

    for module, package in (
        ("onnxruntime", "onnxruntime"),
        ("silero_vad", "silero-vad"),
        ("pyAudioAnalysis", "pyAudioAnalysis"),
    ):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{package} is not installed (scripts/install.sh installs it)")


@pytest.fixture(scope="module")
def classifier() -> ContentClassifier:
    _needs_vad()
    return ContentClassifier()


def sine(hz: float, amplitude: float) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * T)).astype(np.float32)


def chords(rng: np.random.Generator) -> np.ndarray:
    """Held triads with harmonics, a new one every 750 ms, at about -20 dBFS."""
    y = np.zeros(WINDOW)
    for start in range(0, WINDOW, WINDOW // 4):
        part = slice(start, start + WINDOW // 4)
        root = 220 * 2 ** (rng.integers(-5, 7) / 12)
        for ratio in (1.0, 1.26, 1.5):
            for k in (1, 2, 3, 4):
                y[part] += np.sin(2 * np.pi * root * ratio * k * T[part]) / k
    return (0.1 * y / np.abs(y).max()).astype(np.float32)


def espeak(text: str, *, voice: str = "en-us") -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; install.sh --dev)")
    completed = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "165", "--stdout", text],
        capture_output=True,
        check=True,
        timeout=30,
    )
    import io

    y, sr = soundfile.read(io.BytesIO(completed.stdout), dtype="float32")
    y = soxr.resample(y, sr, SAMPLE_RATE).astype(np.float32)
    # A quiet room under the voice: espeak-ng leaves digital silence between words.
    y += np.random.default_rng(5).standard_normal(len(y)).astype(np.float32) * 3e-4
    return y


# ---------------------------------------------------------------------------
# Level
# ---------------------------------------------------------------------------


def test_level_of_a_sine_is_its_peak_in_dbfs() -> None:
    assert level_dbfs(sine(440, 1.0)) == pytest.approx(0.0, abs=0.01)
    assert level_dbfs(sine(1000, 0.25)) == pytest.approx(-12.04, abs=0.01)
    assert level_dbfs(sine(100, 0.001)) == pytest.approx(-60.0, abs=0.01)


def test_level_of_a_full_scale_square_is_plus_3_dbfs() -> None:
    square = np.sign(sine(50, 1.0) + 1e-9)
    assert level_dbfs(square) == pytest.approx(3.01, abs=0.01)


def test_level_of_nothing_is_the_floor() -> None:
    assert level_dbfs(np.zeros(WINDOW, dtype=np.float32)) == -120.0
    assert level_dbfs(np.zeros(0, dtype=np.float32)) == -120.0
    assert level_dbfs(np.full(10, 1e-9, dtype=np.float32)) == -120.0


# ---------------------------------------------------------------------------
# Silence
# ---------------------------------------------------------------------------


def test_digital_silence_is_silence(classifier: ContentClassifier) -> None:
    result = classifier.classify(np.zeros(WINDOW, dtype=np.float32))
    assert result.content == "silence"
    assert result.level_dbfs == -120.0
    assert result.probabilities["silence"] == pytest.approx(1.0)


def test_quiet_noise_is_silence_below_the_threshold_only(classifier: ContentClassifier) -> None:
    noise = np.random.default_rng(1).standard_normal(WINDOW).astype(np.float32)
    quiet = noise * 10 ** (-60 / 20) / np.sqrt(2)  # -60 dBFS
    assert level_dbfs(quiet) == pytest.approx(-60, abs=0.2)
    assert classifier.classify(quiet).content == "silence"
    lower = ContentClassifier(silence_dbfs=-70.0, vad=classifier.vad)
    result = lower.classify(quiet)
    assert result.content != "silence"
    assert result.probabilities["silence"] < 0.01


def test_probabilities_cover_the_three_classes(classifier: ContentClassifier) -> None:
    for y in (np.zeros(WINDOW, dtype=np.float32), sine(440, 0.3)):
        result = classifier.classify(y)
        assert tuple(result.probabilities) == CONTENTS
        assert sum(result.probabilities.values()) == pytest.approx(1.0)
        assert max(result.probabilities, key=result.probabilities.__getitem__) == result.content
        assert result.as_dict()["content"] == result.content


# ---------------------------------------------------------------------------
# Music and speech
# ---------------------------------------------------------------------------


def test_tones_and_chords_are_music(classifier: ContentClassifier) -> None:
    rng = np.random.default_rng(3)
    signals = [sine(440, 0.3), chords(rng)]
    signals += [synthetic_music(3.0, rng=rng) * 0.3 for _ in range(3)]
    contents = [classifier.classify(y).content for y in signals]
    assert contents == ["music"] * len(signals)


def test_espeak_speech_is_speech(classifier: ContentClassifier) -> None:
    text = (
        "Good morning, this is the news at seven. The council met last night "
        "and agreed to build a new bridge over the river before the winter."
    )
    speech = espeak(text)
    windows = [speech[s : s + WINDOW] for s in range(0, len(speech) - WINDOW + 1, WINDOW)]
    assert len(windows) >= 2
    results = [classifier.classify(w) for w in windows]
    assert [r.content for r in results] == ["speech"] * len(windows)
    assert all(r.speech_ratio > 0.5 for r in results)


def test_espeak_speech_over_a_quiet_music_bed_is_speech(classifier: ContentClassifier) -> None:
    speech = espeak("And now the weather for the weekend: sunny spells and a light breeze.")
    speech = speech[:WINDOW]
    bed = synthetic_music(3.0, rng=np.random.default_rng(9))[: len(speech)]
    rms = float(np.sqrt(np.mean(speech**2)))
    bed = bed * rms / float(np.sqrt(np.mean(bed**2))) * 10 ** (-15 / 20)  # bed 15 dB down
    assert classifier.classify(speech + bed).content == "speech"


@pytest.mark.parametrize("splice_s", [1.2, 1.5, 1.8])
def test_spectral_change_finds_a_splice_from_music_to_talk(
    classifier: ContentClassifier, splice_s: float
) -> None:
    """Music cut to talk inside the window's middle second: the change lies at the cut."""
    speech = espeak("Good evening, and welcome to the late show on tagstream radio tonight.")
    speech = speech[np.flatnonzero(np.abs(speech) > 1e-3)[0] :]  # from its first sound
    speech = 0.5 * speech / np.abs(speech).max()
    cut = int(splice_s * SAMPLE_RATE)
    y = synthetic_music(3.0, rng=np.random.default_rng(5)) * 0.3
    y = np.concatenate([y[:cut], speech[: WINDOW - cut]])
    y = (y + np.random.default_rng(1).standard_normal(WINDOW) * 3e-4).astype(np.float32)
    found = spectral_change(y)
    assert found is not None and abs(found.at_s - splice_s) <= 0.05, found
    assert found.speech == 0.0  # no VAD probabilities given: the spectrum alone
    with_vad = spectral_change(y, vad_probabilities=classifier.vad.frame_probabilities(y))
    assert with_vad is not None and abs(with_vad.at_s - splice_s) <= 0.05, with_vad
    assert with_vad.speech > 0.5  # talk begins there
    # The classifier counts voice that its network calls speech: the same point.
    assert classifier.cnn is not None
    _, middles, network = classifier.cnn.speech_over_time(y)
    talk = talk_over_time(classifier.vad.frame_probabilities(y), (middles, network))
    with_talk = spectral_change(y, speech_over_time=talk)
    assert with_talk is not None and abs(with_talk.at_s - splice_s) <= 0.05, with_talk
    assert with_talk.speech > 0.5
    result = classifier.classify(y)  # the same from the classifier, which shares its spectra
    assert (result.change_s, result.change_strength, result.change_speech) == pytest.approx(
        with_talk
    )
    fields = result.as_dict(start_s=100.0)
    assert fields["change_at_s"] == pytest.approx(100.0 + with_talk.at_s, abs=1e-4)
    assert fields["change_speech"] == pytest.approx(with_talk.speech, abs=1e-4)
    # Steady music changes less than the splice; a change outside the middle is not looked at.
    steady = spectral_change(synthetic_music(3.0, rng=np.random.default_rng(5)) * 0.3)
    assert steady is not None and steady[1] < found[1]
    assert 1.0 - 0.02 <= steady[0] <= 2.0 + 0.02


def test_talk_is_voice_that_the_network_calls_speech() -> None:
    """:func:`talk_over_time`: the VAD's frames say where a voice begins, the network's
    patches whether it talks.  A voice from 1.2 s that the network calls speech from
    1.0 s (a 0.68 s patch is speech once about 0.15 s of it is) begins at 1.2 s; one the
    network calls music (singing) is no talk, and no change of speech."""
    frames = 94  # a 3 s window's 32 ms VAD frames
    middles = (np.arange(frames) + 0.5) * 0.032
    vad = (middles >= 1.2).astype(np.float64)
    patches = 0.3475 + 0.16 * np.arange(15)
    talking = (patches >= 1.0).astype(np.float64)
    at, talk = talk_over_time(vad, (patches, talking))
    np.testing.assert_allclose(at, middles)
    assert at[np.argmax(talk > 0.5)] == pytest.approx(1.2, abs=0.032)
    assert talk[middles < 1.2].max() == 0.0 and talk[middles > 1.35].min() == 1.0
    singing = talk_over_time(vad, (patches, np.zeros(15)))[1]
    assert singing.max() == 0.0
    rng = np.random.default_rng(4)
    y = rng.standard_normal(frames * 512).astype(np.float32) * 0.1
    sung, voiced = (
        spectral_change(y, speech_over_time=(at, singing)),
        spectral_change(y, vad_probabilities=vad),
    )
    assert sung is not None and sung.speech == 0.0
    assert voiced is not None and voiced.speech > 0.3
    # Without patches (a window under 0.68 s of sound) the VAD alone says.
    np.testing.assert_array_equal(talk_over_time(vad, (np.zeros(0), np.zeros(0)))[1], vad)


def test_where_talk_begins_beats_a_louder_change_at_the_end_of_the_song(
    classifier: ContentClassifier,
) -> None:
    """Music, a crash (0.6 s of loud noise) from 1.2 s, then talk from 1.8 s.

    The crash changes the spectrum more than the talk after it does, so the spectrum
    alone puts the change at the crash; with the VAD's speech probabilities the point
    where talk begins wins (:data:`model.content.CHANGE_SPEECH_WEIGHT`).
    """
    speech = espeak("Good evening, and welcome to the late show on tagstream radio tonight.")
    speech = speech[np.flatnonzero(np.abs(speech) > 1e-3)[0] :]
    speech = 0.5 * speech / np.abs(speech).max()
    crash, talk = int(1.2 * SAMPLE_RATE), int(1.8 * SAMPLE_RATE)
    rng = np.random.default_rng(3)
    music = synthetic_music(3.0, rng=np.random.default_rng(5)) * 0.3
    noise = 0.3 * rng.standard_normal(talk - crash).astype(np.float32)
    y = np.concatenate([music[:crash], noise, speech[: WINDOW - talk]])
    y = (y + rng.standard_normal(WINDOW) * 3e-4).astype(np.float32)
    spectrum_alone = spectral_change(y)
    assert spectrum_alone is not None and abs(spectrum_alone.at_s - 1.2) <= 0.05, spectrum_alone
    result = classifier.classify(y)
    assert result.change_s is not None and abs(result.change_s - 1.8) <= 0.05, result
    assert result.change_speech is not None and result.change_speech > 0.5
    assert result.change_strength is not None and result.change_strength < spectrum_alone.strength


def test_a_change_of_level_counts_less_than_a_change_of_sound() -> None:
    """Noise 20 dB quieter from the middle on, against noise as loud but darker.

    A change of overall level counts ``CHANGE_LEVEL_WEIGHT`` (a quarter) of its size,
    so a song fading out competes less with the splice to the talk after it.
    """
    from model.content import CHANGE_LEVEL_WEIGHT

    rng = np.random.default_rng(2)
    noise = rng.standard_normal(WINDOW).astype(np.float32) * 0.1
    half = WINDOW // 2
    quieter = noise.copy()
    quieter[half:] *= 0.1  # -20 dB: ln(100) = 4.6 nepers of power in every band
    found = spectral_change(quieter)
    assert found is not None and abs(found[0] - 1.5) <= 0.02, found
    assert found[1] == pytest.approx(CHANGE_LEVEL_WEIGHT * np.log(100.0), rel=0.05)
    darker = noise.copy()  # the same level, the highs moved to the lows
    low = np.convolve(noise[half:], np.ones(8) / np.sqrt(8), mode="same").astype(np.float32)
    darker[half:] = low * np.sqrt(np.mean(noise[half:] ** 2) / np.mean(low**2))
    changed = spectral_change(darker)
    assert changed is not None and abs(changed[0] - 1.5) <= 0.02, changed
    assert changed[1] > found[1]


def test_spectral_change_needs_two_seconds_and_silence_has_none(
    classifier: ContentClassifier,
) -> None:
    assert spectral_change(sine(440, 0.3)[: int(1.99 * SAMPLE_RATE)]) is None
    found = spectral_change(np.concatenate([sine(440, 0.3), sine(880, 0.3)])[24000:71872])
    assert found is not None and found[0] == pytest.approx(1.5, abs=0.02)  # the worker's 2.992 s
    quiet = classifier.classify(np.zeros(WINDOW, np.float32))
    assert quiet.change_s is None and "change_at_s" not in quiet.as_dict()


# ---------------------------------------------------------------------------
# Loading, offline, errors
# ---------------------------------------------------------------------------


def test_the_model_loads_and_runs_without_network_torch_scikit_learn_or_tensorflow() -> None:
    _needs_vad()
    script = textwrap.dedent(
        """
        import socket, sys

        def refuse(*args, **kwargs):
            raise OSError("network use in an offline test")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import numpy as np
        from model.content import load_content_classifier

        classifier = load_content_classifier()
        print(classifier.classify(np.zeros(48000, dtype=np.float32)).content)
        t = np.arange(48000) / 16000
        print(classifier.classify((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)).content)
        print(classifier.vad.path)
        print(classifier.svm.path)
        unwanted = (
            "torch", "silero_vad", "pyAudioAnalysis", "sklearn", "inaSpeechSegmenter", "tensorflow"
        )  # fmt: skip
        print(*(name in sys.modules for name in unwanted))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "no_proxy": "*"},
    )
    assert completed.returncode == 0, completed.stderr
    silence, tone, path, svm_path, imported = completed.stdout.splitlines()
    assert (silence, tone) == ("silence", "music")
    assert Path(path).name == "silero_vad_16k_sequence.onnx"
    assert "silero_vad" in Path(path).parts
    assert Path(svm_path).parts[-4:] == ("pyAudioAnalysis", "data", "models", "svm_rbf_sm")
    assert imported == "False False False False False False"


def test_silence_threshold_outside_the_dbfs_range_is_a_usage_error() -> None:
    _needs_vad()
    for value in (0.0, 5.0, -120.0, -200.0):
        with pytest.raises(UsageError, match="silence_dbfs"):
            ContentClassifier(silence_dbfs=value)


def test_malformed_weights_are_a_content_error(classifier: ContentClassifier) -> None:
    bad = dict(FITTED, weights=[1.0, 2.0])
    with pytest.raises(ContentError, match="tune_content"):
        ContentClassifier(params=bad, vad=classifier.vad)
    with pytest.raises(ContentError, match="malformed"):
        ContentClassifier(params={"mean": [0.0]}, vad=classifier.vad)
    assert issubclass(ContentError, UnavailableError)


def test_stereo_input_is_refused(classifier: ContentClassifier) -> None:
    with pytest.raises(ValueError, match="mono"):
        classifier.classify(np.zeros((WINDOW, 2), dtype=np.float32))
