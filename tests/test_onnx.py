"""The ONNX Runtime backend: equal to Keras for every architecture, cached, free of TensorFlow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import WITHOUT_TENSORFLOW, audio_messages, music

from inference.ready import wait_ready
from model import ModelContract, load_tagger, log_mel
from model.architectures import ARCHITECTURES
from model.convert import PRETRAINED
from model.folder import ONNX_FILE, ModelLoadError, save_model_folder
from model.inaspeech import load_speech_music_cnn
from model.onnx import (
    CPU_CALL_WINDOWS,
    SOURCE_KEY,
    STREAMING_FILE,
    OnnxTagger,
    load_streaming_step,
    new_session,
    source_key,
    to_onnx,
)
from model.tagger import Tagger, resolve_backend
from protocol import decode_update
from tagstream.errors import ExitStatus

ROOT = Path(__file__).resolve().parent.parent
#: Largest probability difference between ONNX Runtime and Keras (issue 15).
ONNX_ATOL = 1e-5
#: Narrow widths keep the networks trained here quick to build and run; the layers are the same.
TEST_WIDTHS = {"fcn4": 0.25, "crnn": 0.5, "short_chunk_resnet": 0.25, "student": 1.0}


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(15)


def varied_windows(rng: np.random.Generator) -> np.ndarray:
    """Silent, quiet, typical, loud and extreme log-mel windows, plus tones as real audio gives."""
    t = np.arange(187 * 256) / 16000
    tone = np.sin(2 * np.pi * 440 * t) * 0.5 + rng.standard_normal(len(t)) * 0.01
    windows = [
        np.zeros((187, 96)),
        rng.uniform(0, 0.5, (187, 96)),
        rng.uniform(0, 3, (187, 96)),
        rng.uniform(0, 6, (187, 96)),
        rng.uniform(4, 12, (187, 96)),  # loud
        np.full((187, 96), 9.0),
        rng.uniform(0, 16, (187, 96)),  # beyond the loudest real input (log10(1 + 1e4 * power))
        log_mel(tone.astype(np.float32))[:187],
        log_mel(np.clip(tone * 30, -20, 20).astype(np.float32))[:187],
    ]
    return np.stack(windows).astype(np.float32)


def _random_statistics(network: Any, rng: np.random.Generator) -> None:
    """Give every batch normalisation non-trivial statistics, as a trained network has."""
    for layer in network.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                    rng.normal(0, 0.1, beta.shape).astype(np.float32),
                    rng.normal(0, 1.0, mean.shape).astype(np.float32),
                    rng.uniform(0.5, 4.0, variance.shape).astype(np.float32),
                ]
            )


def _assert_close_and_alive(onnx_out: np.ndarray, keras_out: np.ndarray) -> None:
    assert onnx_out.shape == keras_out.shape and onnx_out.dtype == np.float32
    np.testing.assert_allclose(onnx_out, keras_out, atol=ONNX_ATOL, rtol=0)
    assert np.ptp(keras_out, axis=0).max() > 1e-3  # the outputs depend on the input


@pytest.mark.parametrize("architecture", sorted(set(ARCHITECTURES) - set(PRETRAINED.values())))
def test_onnx_equals_keras_for_every_trained_architecture(
    architecture: str, rng: np.random.Generator
) -> None:
    network = ARCHITECTURES[architecture](
        n_tags=12, width=TEST_WIDTHS[architecture], name=architecture
    )
    _random_statistics(network, rng)
    contract = ModelContract(name=architecture, architecture=architecture,
                             tags=tuple(f"tag{i}" for i in range(12)))  # fmt: skip
    content = to_onnx(network, window_frames=187, n_mels=96)
    onnx_tagger = OnnxTagger(new_session(content), contract)
    windows = varied_windows(rng)
    _assert_close_and_alive(
        onnx_tagger.predict(windows), Tagger(network, contract, device="cpu").predict(windows)
    )


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_onnx_equals_keras_for_the_pretrained_models(name: str, rng: np.random.Generator) -> None:
    """musicnn and vgg, with their real weights, through load_tagger's cache."""
    onnx_tagger = load_tagger(name, backend="onnxruntime", device="cpu")
    keras_tagger = load_tagger(name, device="cpu")
    assert isinstance(onnx_tagger, OnnxTagger) and onnx_tagger.backend == "onnxruntime"
    windows = varied_windows(rng)
    _assert_close_and_alive(onnx_tagger.predict(windows), keras_tagger.predict(windows))
    for batch in (1, 16, 33):  # the batch axis is free
        assert onnx_tagger.predict(windows[[0] * batch]).shape == (batch, 50)
    # On the CPU a batch runs CPU_CALL_WINDOWS windows per call: the same as one call.
    assert onnx_tagger.call_windows == CPU_CALL_WINDOWS < len(windows)
    (whole,) = onnx_tagger.session.run(["tags"], {"mel": windows})
    np.testing.assert_allclose(onnx_tagger.predict(windows), whole, atol=1e-6, rtol=0)
    signal = rng.standard_normal(16000 * 10).astype(np.float32) * 0.1
    starts, onnx_probabilities = onnx_tagger.tag_audio(signal, hop_frames=50)
    keras_starts, keras_probabilities = keras_tagger.tag_audio(signal, hop_frames=50)
    np.testing.assert_array_equal(starts, keras_starts)
    np.testing.assert_allclose(onnx_probabilities, keras_probabilities, atol=ONNX_ATOL, rtol=0)


# --------------------------------------------------------------------------- the cached file


def _student_folder(folder: Path, rng: np.random.Generator, **files: str) -> ModelContract:
    network = ARCHITECTURES["student"](n_tags=4, width=0.5, name="student")
    _random_statistics(network, rng)
    contract = ModelContract(name="small", architecture="student", tags=("a", "b", "c", "d"))
    save_model_folder(folder, network, contract, files=files)
    return contract


def test_onnx_file_is_built_once_and_rebuilt_when_the_model_changes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    folder = tmp_path / "m"
    _student_folder(folder, rng)
    windows = varied_windows(rng)[:4]
    first = load_tagger(str(folder), backend="onnxruntime")
    onnx_path = folder / ONNX_FILE
    built = onnx_path.stat()
    key = new_session(onnx_path).get_modelmeta().custom_metadata_map[SOURCE_KEY]
    assert key == source_key(folder) and len(key.partition(":")[2]) == 64  # a SHA-256
    assert oct(built.st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600
    again = load_tagger(str(folder), backend="onnxruntime")
    assert onnx_path.stat().st_mtime_ns == built.st_mtime_ns  # not rebuilt
    np.testing.assert_array_equal(first.predict(windows), again.predict(windows))

    changed = ARCHITECTURES["student"](n_tags=4, width=0.5, name="student")
    _random_statistics(changed, rng)
    changed.save(folder / "model.keras")  # a new model.keras under the old model.onnx
    rebuilt = load_tagger(str(folder), backend="onnxruntime")
    assert new_session(onnx_path).get_modelmeta().custom_metadata_map[SOURCE_KEY] != key
    keras_now = load_tagger(str(folder), backend="tensorflow").predict(windows)
    np.testing.assert_allclose(rebuilt.predict(windows), keras_now, atol=ONNX_ATOL, rtol=0)
    assert np.abs(rebuilt.predict(windows) - first.predict(windows)).max() > 1e-3
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_broken_onnx_file_is_rebuilt_and_without_keras_refused(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    folder = tmp_path / "m"
    _student_folder(folder, rng)
    (folder / ONNX_FILE).write_bytes(b"not an onnx file")
    tagger = load_tagger(str(folder), backend="onnxruntime")
    assert tagger.predict(varied_windows(rng)[:1]).shape == (1, 4)
    (folder / ONNX_FILE).write_bytes(b"not an onnx file")
    (folder / "model.keras").unlink()
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load it") as raised:
        load_tagger(str(folder), backend="onnxruntime")
    assert raised.value.status == ExitStatus.UNAVAILABLE
    (folder / ONNX_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"neither model\.keras nor model\.onnx"):
        load_tagger(str(folder), backend="onnxruntime")


def test_a_folder_with_only_the_onnx_file_and_contract_loads(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """What is copied to a device without TensorFlow: contract.json and model.onnx."""
    folder = tmp_path / "m"
    _student_folder(folder, rng)
    windows = varied_windows(rng)[:3]
    expected = load_tagger(str(folder), backend="onnxruntime").predict(windows)
    (folder / "model.keras").unlink()
    alone = load_tagger(str(folder), backend="onnxruntime")
    np.testing.assert_array_equal(alone.predict(windows), expected)
    assert sorted(p.name for p in folder.iterdir()) == ["contract.json", "model.onnx"]


def test_backend_and_precision_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="backend='torch' must be one of"):
        load_tagger("MSD_musicnn", backend="torch")
    with pytest.raises(ModelLoadError, match="precision = 'bfloat16' is a TensorFlow option"):
        load_tagger("MSD_musicnn", backend="onnxruntime", precision="bfloat16")


def test_training_export_writes_an_onnx_file_that_loads_as_is(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    from training.export import export_checkpoint

    checkpoint = tmp_path / "checkpoint"
    _student_folder(checkpoint, rng, **{"state.json": json.dumps({"epoch": 1})})
    out = export_checkpoint(checkpoint, tmp_path / "exported", tflite=False)
    built = (out / ONNX_FILE).stat().st_mtime_ns
    exported = load_tagger(str(out), backend="onnxruntime")
    assert (out / ONNX_FILE).stat().st_mtime_ns == built  # its key matched: not rebuilt
    windows = varied_windows(rng)
    keras_out = load_tagger(str(out)).predict(windows)
    np.testing.assert_allclose(exported.predict(windows), keras_out, atol=ONNX_ATOL, rtol=0)
    assert sorted(p.name for p in out.iterdir()) == ["contract.json", "model.keras", "model.onnx"]


# --------------------------------------------------------------------------- no TensorFlow

_WITHOUT_TENSORFLOW = (
    WITHOUT_TENSORFLOW
    + """
import numpy as np
from model import load_tagger

tagger = load_tagger(sys.argv[1], backend="onnxruntime", cache_dir=sys.argv[2])
tagger.warm_up(batch_size=4)
starts, probabilities = tagger.tag_audio(np.zeros(16000 * 7, dtype=np.float32))
loaded = sorted({m.partition(".")[0] for m in sys.modules} & {"tensorflow", "keras", "onnx"})
print(tagger.backend, probabilities.shape, loaded)
"""
)


@pytest.mark.parametrize("model_name", ["MSD_musicnn", "exported"])
def test_the_onnx_path_never_imports_tensorflow(
    model_name: str, tmp_path: Path, rng: np.random.Generator
) -> None:
    """A pretrained name and an exported folder load and tag with TensorFlow unimportable."""
    if model_name == "exported":
        folder = tmp_path / "m"
        _student_folder(folder, rng)
        load_tagger(str(folder), backend="onnxruntime")  # builds model.onnx (TensorFlow allowed)
        model_name, n_tags = str(folder), 4
    else:
        load_tagger(model_name, backend="onnxruntime")  # the cache holds an up-to-date file
        n_tags = 50
    child = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, model_name, str(Path("~/.cache/tagstream"))],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == f"onnxruntime (2, {n_tags}) []"


def test_without_tensorflow_a_missing_onnx_file_says_what_is_missing(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """The guard of the test above is real: building model.onnx does need TensorFlow."""
    folder = tmp_path / "m"
    _student_folder(folder, rng)
    child = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, str(folder), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode != 0
    assert "made unimportable by the test" in child.stderr


_WORKER_WITHOUT_TENSORFLOW = (
    WITHOUT_TENSORFLOW
    + """
from inference.__main__ import main

sys.exit(main(sys.argv[1:]))
"""
)


@pytest.mark.parametrize("mode", ["exact", "streaming"])
def test_the_worker_runs_on_onnx_without_tensorflow(mode: str, tmp_path: Path) -> None:
    """``python -m inference --backend onnxruntime [--mode streaming]``: ready, tags a
    stream, never imports TensorFlow (streaming mode through streaming.onnx)."""
    tagger = load_tagger("MSD_musicnn", backend="onnxruntime")  # builds model.onnx, with TF here
    assert tagger.folder is not None
    load_streaming_step(tagger.folder, tagger.contract)  # and streaming.onnx
    load_speech_music_cnn()  # and the content classifier's network graph, with onnx here
    ready = tmp_path / "ready.json"
    inp, out = f"ipc://{tmp_path}/in", f"ipc://{tmp_path}/out"
    child = subprocess.Popen(
        [sys.executable, "-c", _WORKER_WITHOUT_TENSORFLOW, "--backend", "onnxruntime",
         "--mode", mode, "--input", inp, "--publish", out, "--ready-file", str(ready)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    context = zmq.Context()
    try:
        info = wait_ready(ready, process=child, timeout_s=300)
        assert info["backend"] == "onnxruntime" and info["mode"] == mode
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(out)
        push = context.socket(zmq.PUSH)
        push.connect(inp)
        rng = np.random.default_rng(0)
        update = None
        seconds = 3.5 if mode == "exact" else 6.0  # a window, plus its look-ahead if streamed
        for attempt in range(30):  # the subscription joins while probe streams play
            for message in audio_messages(music(rng, seconds), f"onnx:{attempt}", block=1600):
                push.send_multipart(message)
            if sub.poll(3000):
                update = decode_update(sub.recv_multipart())
                break
        assert update is not None and len(update.tags) == len(update.smoothed)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
        assert child.returncode == ExitStatus.OK, err[-2000:]
        assert "backend=onnxruntime" in err
    finally:
        if child.poll() is None:
            child.kill()
        context.destroy(linger=0)


# --------------------------------------------------------------------------- "auto"


def test_auto_is_onnxruntime_except_for_bfloat16() -> None:
    assert resolve_backend("auto") == "onnxruntime"
    assert resolve_backend("auto", precision="bfloat16") == "tensorflow"
    assert resolve_backend("tensorflow") == "tensorflow"
    assert resolve_backend("onnxruntime", precision="bfloat16") == "onnxruntime"  # refused later
    with pytest.raises(ModelLoadError, match="backend='onnx' must be one of auto, tensorflow"):
        resolve_backend("onnx")
    assert load_tagger("MSD_musicnn", backend="auto").backend == "onnxruntime"


def test_the_streaming_step_on_onnx_equals_tensorflow_and_is_built_once(
    rng: np.random.Generator,
) -> None:
    """streaming.onnx: the same caches and probabilities as the TensorFlow step, hop by hop."""
    from model.streaming import StreamingMusicnn

    onnx_tagger = load_tagger("MSD_musicnn", backend="onnxruntime")
    assert onnx_tagger.folder is not None
    onnx_step = load_streaming_step(onnx_tagger.folder, onnx_tagger.contract)
    built = (onnx_tagger.folder / STREAMING_FILE).stat().st_mtime_ns
    keras = load_tagger("MSD_musicnn", backend="tensorflow")
    tf_step = StreamingMusicnn(keras.network, window_frames=187)
    assert (onnx_step.backend, tf_step.backend) == ("onnxruntime", "tensorflow")
    assert onnx_step.lookahead_frames == tf_step.lookahead_frames == 73
    assert onnx_step.feature_channels == tf_step.feature_channels
    signals = [log_mel(music(rng, 9.0)), log_mel(np.clip(music(rng, 9.0) * 40, -1, 1))]
    caches = {step: [step.new_cache() for _ in signals] for step in (onnx_step, tf_step)}
    position, pushed = 0, 0
    for hop in (187 + 73, 31, 62, 1, 31):  # batched streams, different hops
        chunks = [mel[position : position + hop] for mel in signals]
        ours = onnx_step.push(caches[onnx_step], chunks)
        theirs = tf_step.push(caches[tf_step], chunks)
        for a, b in zip(ours, theirs, strict=True):
            assert a is not None and b is not None
            np.testing.assert_allclose(a, b, atol=ONNX_ATOL, rtol=0)
            pushed += 1
        position += hop
    assert pushed == 10
    for a, b in zip(caches[onnx_step], caches[tf_step], strict=True):
        assert a.frames_seen == b.frames_seen
        np.testing.assert_allclose(a.features, b.features, atol=1e-3, rtol=1e-5)
    again = load_streaming_step(onnx_tagger.folder, onnx_tagger.contract)
    assert again.backend == "onnxruntime"
    assert (onnx_tagger.folder / STREAMING_FILE).stat().st_mtime_ns == built  # not rebuilt
