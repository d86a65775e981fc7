"""model.pyaudioanalysis: pyAudioAnalysis's speech/music SVM, read and run by our own code.

The features are checked against pyAudioAnalysis's own implementation and the
SVM's probabilities against scikit-learn's ``SVC.predict_proba`` on the same
pickled model (both imported here only, never by tagstream itself).  Signals
are synthesised or spoken by espeak-ng; nothing from ../shared is used.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_content import WINDOW, espeak

from model import pyaudioanalysis
from model.content import ContentClassifier, ContentError
from model.pyaudioanalysis import (
    SvmError,
    load_speech_music_svm,
    mid_term_features,
    short_term_features,
)
from tools.demo_audio import synthetic_music

if importlib.util.find_spec("pyAudioAnalysis") is None:
    pytest.skip(
        "pyAudioAnalysis is not installed (scripts/install.sh installs it)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def svm() -> pyaudioanalysis.SpeechMusicSvm:
    return load_speech_music_svm()


@pytest.fixture(scope="module")
def reference() -> types.ModuleType:
    """pyAudioAnalysis's MidTermFeatures, imported as its author wrote it.

    Its module imports eyed3 and pydub for reading files (not installed: tagstream reads
    audio itself); empty stand-ins for those two let it import.  The feature code runs
    as shipped.
    """
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    saved = {name: sys.modules.get(name) for name in ("eyed3", "pydub")}
    for name in saved:
        if importlib.util.find_spec(name) is None:
            stand_in = types.ModuleType(name)
            stand_in.AudioSegment = None  # type: ignore[attr-defined]
            sys.modules[name] = stand_in
    import matplotlib

    matplotlib.use("Agg")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # aifc, scipy.fftpack
            from pyAudioAnalysis import MidTermFeatures
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
    return MidTermFeatures


def signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(WINDOW) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 1e-3 * rng.standard_normal(WINDOW)
    return {
        "noise": (0.1 * rng.standard_normal(WINDOW)).astype(np.float32),
        "tone": tone.astype(np.float32),
        "music": synthetic_music(3.0, rng=rng)[:WINDOW].astype(np.float32),
        "digital silence": np.zeros(WINDOW, dtype=np.float32),
        "1.3 s": (0.1 * rng.standard_normal(20800)).astype(np.float32),
    }


def test_features_equal_pyaudioanalysis_own(reference: types.ModuleType) -> None:
    for name, y in signals().items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its own divisions by zero on digital silence
            mid, short, _ = reference.mid_feature_extraction(
                y.astype(np.float64), 16000, 16000, 8000, 800, 800
            )
        ours = short_term_features(y)
        assert ours.shape == short.T.shape, name
        np.testing.assert_allclose(ours, np.nan_to_num(short.T), rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(mid_term_features(ours), mid.T, rtol=0, atol=1e-9, err_msg=name)


def test_probabilities_equal_scikit_learns(svm: pyaudioanalysis.SpeechMusicSvm) -> None:
    pytest.importorskip("sklearn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickled by scikit-learn 0.24.2
        with open(svm.path, "rb") as f:
            model = pickle.load(f)
    rows = np.vstack([mid_term_features(short_term_features(y)) for y in signals().values()])
    expected = model.predict_proba((rows - svm.mean) / svm.std)[:, svm.classes.index("speech")]
    # libsvm turns the one Platt probability of a binary model into two by its iterative
    # multi-class solver, stopped at a tolerance of 0.0025: the same value to about 1e-4.
    np.testing.assert_allclose(svm.window_probabilities(rows), expected, atol=1e-3)
    assert expected.std() > 0.1  # the signals differ in what the model makes of them


def test_speech_is_speech_and_music_is_music(svm: pyaudioanalysis.SpeechMusicSvm) -> None:
    speech = espeak(
        "Good evening. Here are the headlines: the bridge reopens on Monday, "
        "and the library extends its hours for the exam season."
    )
    music = synthetic_music(9.0, rng=np.random.default_rng(4))
    talk = [svm.speech_probability(speech[s : s + WINDOW]) for s in (0, WINDOW)]
    songs = [svm.speech_probability(music[s : s + WINDOW]) for s in (0, WINDOW, 2 * WINDOW)]
    assert min(talk) > 0.5 > max(songs), (talk, songs)


def test_a_window_shorter_than_one_frame_is_undecided(svm: pyaudioanalysis.SpeechMusicSvm) -> None:
    assert svm.speech_probability(np.ones(799, dtype=np.float32)) == 0.5
    assert short_term_features(np.zeros(0, dtype=np.float32)).shape == (0, 68)


def test_a_model_file_with_other_code_is_refused(
    svm: pyaudioanalysis.SpeechMusicSvm, tmp_path: Path
) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("echo pwned",))

    model = tmp_path / "svm_rbf_sm"
    model.write_bytes(pickle.dumps(Payload()))
    (tmp_path / "svm_rbf_smMEANS").write_bytes(svm.path.with_name("svm_rbf_smMEANS").read_bytes())
    with pytest.raises(SvmError, match=r"(posix|os)\.system is not allowed.*--no-deps"):
        load_speech_music_svm(model)


def test_another_model_is_refused(svm: pyaudioanalysis.SpeechMusicSvm, tmp_path: Path) -> None:
    folder = svm.path.parent
    model = tmp_path / "svm_rbf_4class"
    model.write_bytes((folder / "svm_rbf_4class").read_bytes())
    (tmp_path / "svm_rbf_4classMEANS").write_bytes((folder / "svm_rbf_4classMEANS").read_bytes())
    with pytest.raises(SvmError, match=r"is not pyAudioAnalysis 0\.3\.14's speech/music SVM"):
        load_speech_music_svm(model)


def test_without_the_package_the_classifier_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = importlib.metadata.files

    def without_it(name: str) -> object:
        if name == "pyAudioAnalysis":
            raise importlib.metadata.PackageNotFoundError(name)
        return files(name)

    monkeypatch.setattr(importlib.metadata, "files", without_it)
    with pytest.raises(ContentError) as caught:
        ContentClassifier()
    message = str(caught.value)
    assert "\n" not in message
    assert "pip install --no-deps pyAudioAnalysis==0.3.14" in message
