"""model.inaspeech: inaSpeechSegmenter's speech/music network, read and run by our own code.

The spectrum is checked against the library's own ``sidekit_mfcc`` module (loaded
from the installed wheel by its path: the package's ``__init__`` imports TensorFlow 2's
own Keras and pyannote, which tagstream does not install), and the ONNX graph against
Keras's own reading of the HDF5 file.  Signals are synthesised or spoken by espeak-ng;
nothing from ../shared is used.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import subprocess
import sys
import textwrap
import types
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import ROOT, WITHOUT_TENSORFLOW
from test_content import WINDOW, espeak

from config import load_config
from inference.content import ContentTracker
from model import inaspeech
from model.content import CNN_WEIGHT, FEATURE_NAMES, ContentClassifier, ContentError, cnn_logit
from model.inaspeech import (
    PATCH_FRAMES,
    CnnError,
    load_speech_music_cnn,
    log_mel_spectrum,
    patches,
)
from tools.demo_audio import synthetic_music

if importlib.util.find_spec("inaSpeechSegmenter") is None:
    pytest.skip(
        "inaSpeechSegmenter is not installed (scripts/install.sh installs it)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def cnn() -> inaspeech.SpeechMusicCnn:
    return load_speech_music_cnn()


@pytest.fixture(scope="module")
def sidekit() -> Iterator[types.ModuleType]:
    """The wheel's ``sidekit_mfcc.py`` as shipped.  It predates numpy 2: ``numpy.int`` and
    ``numpy.lib.pad`` are given back to it while this module's tests run."""
    files = importlib.metadata.files("inaSpeechSegmenter") or []
    [entry] = [e for e in files if e.name == "sidekit_mfcc.py"]
    spec = importlib.util.spec_from_file_location("ina_sidekit_mfcc", str(entry.locate()))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    np.int = int  # type: ignore[attr-defined]
    np.lib.pad = np.pad  # type: ignore[attr-defined]
    yield module
    del np.int  # type: ignore[attr-defined]
    del np.lib.pad  # type: ignore[attr-defined]


def signals(rng: np.random.Generator) -> dict[str, np.ndarray]:
    noise = (0.1 * rng.standard_normal(WINDOW)).astype(np.float32)
    noise[10000:12000] = 0.0  # digital silence: -inf in both
    return {
        "noise with a gap": noise,
        "synthetic music": synthetic_music(3.0, rng=rng)[:WINDOW],
        "espeak-ng": espeak("The traffic on the ring road is slow this morning.")[:WINDOW],
    }


def test_log_mel_spectrum_equals_the_librarys(sidekit: types.ModuleType, rng) -> None:
    for name, y in signals(rng).items():
        ours = log_mel_spectrum(y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # log(0) in both
            _, _, _, theirs = sidekit.mfcc(y.astype(np.float32), get_mspec=True)
        assert ours.shape == theirs.shape == ((len(y) - 400) // 160 + 1, 24), name
        assert ours.dtype == theirs.dtype == np.float32, name
        np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs), err_msg=name)
        finite = np.isfinite(theirs)
        np.testing.assert_allclose(ours[finite], theirs[finite], rtol=0, atol=1e-4, err_msg=name)


def test_patches_are_standardised_slices_and_skip_digital_silence(rng) -> None:
    y = signals(rng)["noise with a gap"]
    spectrum = log_mel_spectrum(y)
    batch = patches(spectrum, step=16)
    starts = range(0, len(spectrum) - PATCH_FRAMES + 1, 16)
    finite = [s for s in starts if np.isfinite(spectrum[s : s + PATCH_FRAMES, :21]).all()]
    assert 0 < len(batch) == len(finite) < len(starts)
    first = spectrum[finite[0] : finite[0] + PATCH_FRAMES, :21].astype(np.float64)
    np.testing.assert_allclose(batch[0], (first - first.mean()) / first.std(), atol=1e-5)


def test_the_onnx_graph_equals_keras_reading_the_file(cnn: inaspeech.SpeechMusicCnn, rng) -> None:
    keras = pytest.importorskip("keras")
    loaded = keras.models.load_model(str(cnn.path), compile=False)
    inputs = keras.Input((PATCH_FRAMES, 21))
    outputs = inputs
    for layer in loaded.layers:  # the file's batch shape is read as 4-D by Keras 3
        outputs = layer(outputs)
    reference = keras.Model(inputs, outputs)
    batch = np.concatenate([patches(log_mel_spectrum(y), step=8) for y in signals(rng).values()])
    expected = np.asarray(reference(batch, training=False))
    np.testing.assert_allclose(cnn.patch_probabilities(batch), expected, rtol=0, atol=1e-5)


def test_speech_and_music_are_told_apart(cnn: inaspeech.SpeechMusicCnn, rng) -> None:
    y = signals(rng)
    assert cnn.speech_probability(y["espeak-ng"]) > 0.9
    assert cnn.speech_probability(y["synthetic music"]) < 0.1
    assert cnn.speech_probability(np.zeros(WINDOW, dtype=np.float32)) == 0.5  # no patch
    assert cnn.speech_probability(y["espeak-ng"][:8000]) == 0.5  # under 0.68 s


def test_the_patches_say_where_in_the_window_talk_begins(
    cnn: inaspeech.SpeechMusicCnn, rng
) -> None:
    """Music, then talk from 1.6 s: the patches' middles are 0.16 s apart from 0.3475 s
    (68 frames of 25 ms every 10 ms), music's patches are music and talk's are speech."""
    y = signals(rng)
    splice = int(1.6 * inaspeech.SAMPLE_RATE)
    mixed = np.concatenate([y["synthetic music"][:splice], y["espeak-ng"][: WINDOW - splice]])
    mean, middles, speech = cnn.speech_over_time(mixed)
    np.testing.assert_allclose(middles, 0.3475 + 0.16 * np.arange(15))
    assert mean == pytest.approx(speech.mean()) == pytest.approx(cnn.speech_probability(mixed))
    assert speech[middles + 0.34 < 1.6].max() < 0.1  # wholly music
    assert speech[middles - 0.34 > 1.6].min() > 0.9  # wholly talk
    # Digital silence leaves its patches out, and their middles with them.
    gap = y["noise with a gap"]
    _, kept, _ = cnn.speech_over_time(gap)
    assert 0 < len(kept) < 15 and not np.any(np.abs(kept - 11000 / 16000) < 0.34)


def test_without_the_wheel_the_classifier_says_how_to_install_it(monkeypatch) -> None:
    files = importlib.metadata.files

    def without_it(name: str) -> object:
        if name == "inaSpeechSegmenter":
            raise importlib.metadata.PackageNotFoundError(name)
        return files(name)

    monkeypatch.setattr(importlib.metadata, "files", without_it)
    with pytest.raises(CnnError, match=r"pip install --no-deps inaSpeechSegmenter==0\.6\.8"):
        load_speech_music_cnn()
    with pytest.raises(ContentError) as caught:
        ContentClassifier()
    assert "\n" not in str(caught.value)
    assert "pip install --no-deps inaSpeechSegmenter==0.6.8" in str(caught.value)


def test_the_built_graph_is_kept_and_then_loads_without_onnx(tmp_path, rng) -> None:
    """The graph is built once (with the onnx package) into the cache; a later start
    needs only onnxruntime, as the tagger's ONNX Runtime backend does."""
    y = signals(rng)["espeak-ng"]
    expected = load_speech_music_cnn(cache_dir=tmp_path).speech_probability(y)
    [kept] = tmp_path.glob("inaspeech-sm-*-v1.onnx")
    np.save(tmp_path / "window.npy", y)
    script = WITHOUT_TENSORFLOW + textwrap.dedent(
        f"""
        import numpy as np
        from model.inaspeech import load_speech_music_cnn

        cnn = load_speech_music_cnn(cache_dir={str(tmp_path)!r})
        print(cnn.speech_probability(np.load({str(tmp_path / "window.npy")!r})))
        print(*(name in sys.modules for name in ("onnx", "tensorflow", "keras")))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    probability, imported = completed.stdout.splitlines()
    assert float(probability) == pytest.approx(expected, abs=1e-6)
    assert imported == "False False False"
    assert kept.stat().st_size > 1_000_000


def test_a_damaged_cached_graph_is_built_again(tmp_path, rng, caplog) -> None:
    load_speech_music_cnn(cache_dir=tmp_path)
    [kept] = tmp_path.glob("inaspeech-sm-*.onnx")
    whole = kept.read_bytes()
    kept.write_bytes(whole[:1000])  # a disk that filled up, an interrupted copy
    with caplog.at_level(logging.WARNING, logger="model.inaspeech"):
        cnn = load_speech_music_cnn(cache_dir=tmp_path)
    assert "building its graph again" in caplog.text
    assert kept.read_bytes() == whole
    assert cnn.speech_probability(signals(rng)["synthetic music"]) < 0.1


def test_an_unreadable_network_file_is_one_line(tmp_path) -> None:
    path = tmp_path / "keras_speech_music_cnn.hdf5"
    path.write_bytes(b"not an HDF5 file")
    for given in (path, tmp_path / "missing.hdf5"):
        with pytest.raises(CnnError, match=r"cannot read the speech/music network .*hdf5") as err:
            load_speech_music_cnn(given, cache_dir=tmp_path)
        assert "\n" not in str(err.value)


def test_the_classifier_adds_the_networks_log_odds(cnn: inaspeech.SpeechMusicCnn, rng) -> None:
    """p(speech) is the logistic model's log-odds plus the network's (``CNN_WEIGHT`` 1)."""
    classifier = ContentClassifier(cnn=cnn)
    for y in signals(rng).values():
        result = classifier.classify(y)
        network = result.features["cnn_speech_logit"]
        assert network == pytest.approx(cnn_logit(cnn.speech_probability(y)))
        features = np.array([result.features[name] for name in FEATURE_NAMES])
        logistic = classifier._model.speech_probability(features)
        expected = 1 / (1 + np.exp(-(np.log(logistic / (1 - logistic)) + CNN_WEIGHT * network)))
        assert result.probabilities["speech"] == pytest.approx(expected, rel=1e-6)


def test_without_the_network_the_logistic_model_decides_alone(rng) -> None:
    """``[content] network = false``: the smaller classifier, e.g. for an edge device."""
    tracker = ContentTracker.from_config(load_config(overrides={"content.network": False}))
    classifier = tracker.classifier
    assert classifier is not None and classifier.cnn is None
    for y in signals(rng).values():
        result = classifier.classify(y)
        assert "cnn_speech_logit" not in result.features
        features = np.array([result.features[name] for name in FEATURE_NAMES])
        expected = classifier._model.speech_probability(features)
        assert result.probabilities["speech"] == pytest.approx(expected, rel=1e-6)
    tracker.close()


def test_a_constant_patch_is_left_out_without_a_warning() -> None:
    spectrum = np.full((PATCH_FRAMES + 16, 24), -3.0, dtype=np.float32)
    spectrum[PATCH_FRAMES:] = 2.0  # the first patch is constant, the second is not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = patches(spectrum, step=16)
    assert len(batch) == 1
    np.testing.assert_allclose(batch[0].mean(), 0.0, atol=1e-5)
