"""The Keras re-implementations equal the original TF-1 graphs, and load through their contract."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model import MSD_TAGS, ContractError, ModelContract, load_tagger, log_mel
from model.convert import PRETRAINED, convert
from model.reference import OriginalGraph
from model.tagger import BACKENDS, ModelLoadError, _cpu_has_bfloat16, window_starts

FIDELITY_ATOL = 1e-4


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every model test that is not about one backend runs on each (``model.backend``)."""
    return str(request.param)


def _varied_windows(rng: np.random.Generator) -> np.ndarray:
    """Quiet, typical, loud and extreme log-mel windows, plus real-looking ones."""
    t = np.arange(187 * 256) / 16000
    tone = np.sin(2 * np.pi * 440 * t) * 0.5 + rng.standard_normal(len(t)) * 0.01
    windows = [
        np.zeros((187, 96)),
        rng.uniform(0, 0.5, (187, 96)),
        rng.uniform(0, 3, (187, 96)),
        rng.uniform(0, 6, (187, 96)),
        rng.uniform(4, 12, (187, 96)),  # loud: beyond what float16 mel power could hold
        np.full((187, 96), 9.0),
        log_mel(tone.astype(np.float32))[:187],
        log_mel((np.clip(tone * 30, -20, 20)).astype(np.float32))[:187],
    ]
    return np.stack(windows).astype(np.float32)


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_keras_equals_original_graph(name: str, rng: np.random.Generator) -> None:
    network, contract = convert(name)
    reference = OriginalGraph(name)
    try:
        windows = _varied_windows(rng)
        expected = reference.predict(windows)
    finally:
        reference.close()
    actual = np.asarray(network(windows, training=False))
    assert actual.shape == (len(windows), 50)
    np.testing.assert_allclose(actual, expected, atol=FIDELITY_ATOL, rtol=0)
    # The outputs really depend on the input (no collapsed network).
    assert np.ptp(actual, axis=0).max() > 0.05
    assert contract.tags == MSD_TAGS


def test_parameter_counts_match_checkpoints() -> None:
    counts = {name: convert(name)[0].count_params() for name in PRETRAINED}
    assert counts == {"MSD_musicnn": 792_079, "MSD_vgg": 607_030}


def test_cached_model_folder_reloads_identically(
    tmp_path: Path, rng: np.random.Generator, backend: str
) -> None:
    tagger = load_tagger("MSD_vgg", cache_dir=tmp_path, backend=backend)
    assert tagger.backend == backend
    folder = next(tmp_path.glob("MSD_vgg-*"))
    assert (folder / "model.keras").is_file()
    contract = json.loads((folder / "contract.json").read_text())
    assert contract["tags"] == list(MSD_TAGS)
    assert contract["features"] == {
        "sample_rate": 16000,
        "n_fft": 512,
        "hop_length": 256,
        "n_mels": 96,
        "log_scale": 10000.0,
    }
    assert contract["window_frames"] == 187
    windows = _varied_windows(rng)[:3]
    first = tagger.predict(windows)
    again = load_tagger(str(folder), cache_dir=tmp_path / "unused", backend=backend)
    np.testing.assert_array_equal(first, again.predict(windows))
    assert not (tmp_path / "unused").exists()


def test_contract_disagreeing_with_network_is_refused(tmp_path: Path, backend: str) -> None:
    tagger = load_tagger("MSD_vgg", cache_dir=tmp_path, backend=backend)
    folder = next(tmp_path.glob("MSD_vgg-*"))
    ModelContract.load(folder).replace(tags=("rock", "pop")).save(folder)
    with pytest.raises(ContractError, match="2 tags"):
        load_tagger(str(folder), backend=backend)
    del tagger


def test_unknown_model_names_the_choices(tmp_path: Path, backend: str) -> None:
    with pytest.raises(ModelLoadError, match="MSD_musicnn, MSD_vgg"):
        load_tagger("MSD_nope", cache_dir=tmp_path, backend=backend)


def test_predict_checks_window_shape(backend: str) -> None:
    tagger = load_tagger("MSD_musicnn", backend=backend)
    with pytest.raises(ValueError, match=r"\(n, 187, 96\)"):
        tagger.predict(np.zeros((1, 100, 96)))
    assert tagger.predict(np.zeros((0, 187, 96))).shape == (0, 50)


_BFLOAT16_CHILD = """
import sys
import numpy as np
from model import load_tagger
windows = np.load(sys.argv[1])
np.save(sys.argv[2], load_tagger("MSD_musicnn", precision="bfloat16").predict(windows))
"""


def test_bfloat16_precision_stays_close_to_float32(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """model.precision = "bfloat16" (process-wide in TensorFlow, so in a child process)."""
    windows = _varied_windows(rng)
    np.save(tmp_path / "windows.npy", windows)
    child = subprocess.run(
        [sys.executable, "-c", _BFLOAT16_CHILD, str(tmp_path / "windows.npy"),
         str(tmp_path / "bf16.npy")],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    bfloat16 = np.load(tmp_path / "bf16.npy")
    float32 = load_tagger("MSD_musicnn").predict(windows)
    difference = np.abs(bfloat16 - float32)
    assert difference.max() < 0.05
    if _cpu_has_bfloat16():  # it really ran in bfloat16
        assert difference.max() > 1e-4
    else:  # it still runs, after one line saying it will be slow
        assert "no bfloat16 instructions" in child.stderr


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="precision='float16' must be one of"):
        load_tagger("MSD_musicnn", precision="float16")


def test_window_starts_follow_musicnn_batching() -> None:
    assert list(window_starts(187, 187)) == [0]
    assert list(window_starts(186, 187)) == []
    assert list(window_starts(600, 187)) == [0, 187, 374]
    assert list(window_starts(300, 187, 50)) == [0, 50, 100]


# --------------------------------------------------------------------------- the registry


def test_registry_knows_every_architecture_a_contract_can_name() -> None:
    from model.architectures import ARCHITECTURES

    assert set(PRETRAINED.values()) <= set(ARCHITECTURES)
    with pytest.raises(ContractError, match="'resnet50' is not a registered network"):
        ModelContract(name="x", architecture="resnet50")
    data = ModelContract(name="x", architecture="vgg").to_dict()
    with pytest.raises(ContractError, match="'custom' is not a registered network"):
        ModelContract.from_dict({**data, "architecture": "custom"})


# --------------------------------------------------------------------------- model folders


def _fill(text: str) -> Callable[[Path], None]:
    def fill(staging: Path) -> None:
        (staging / "model.keras").write_text(text)
        (staging / "contract.json").write_text(text)

    return fill


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_write_folder_replaces_a_folder_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from model.folder import write_folder

    target = tmp_path / "m"
    assert write_folder(target, _fill("old"))
    (target / "stale.txt").write_text("from the old folder")
    assert write_folder(target, _fill("new"))
    assert sorted(p.name for p in target.iterdir()) == ["contract.json", "model.keras"]
    assert (target / "model.keras").read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_write_folder_without_replace_keeps_the_first_writer(tmp_path: Path) -> None:
    from model.folder import write_folder

    target = tmp_path / "m"
    assert write_folder(target, _fill("first"), replace=False)
    assert not write_folder(target, _fill("second"), replace=False)
    assert (target / "model.keras").read_text() == "first"
    assert _leftovers(tmp_path) == []


def test_interrupted_write_leaves_the_old_folder_intact(tmp_path: Path) -> None:
    from model.folder import write_folder

    target = tmp_path / "m"
    write_folder(target, _fill("old"))

    def interrupted(staging: Path) -> None:
        (staging / "model.keras").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(target, interrupted)
    assert (target / "model.keras").read_text() == "old"
    assert _leftovers(tmp_path) == []


_KILLED_WRITER = """
import sys
from model.folder import write_folder
def fill(staging):
    (staging / "model.keras").write_text("new, half written")
    print("ready", flush=True)
    sys.stdin.read()  # killed here
write_folder(sys.argv[1], fill)
"""


def test_killed_write_leaves_the_old_folder_and_the_next_write_cleans_up(tmp_path: Path) -> None:
    from model.folder import write_folder

    target = tmp_path / "m"
    write_folder(target, _fill("old"))
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    finally:
        child.kill()
        child.wait()
    assert (target / "model.keras").read_text() == "old"
    assert [name.startswith(".m.tmp-") for name in _leftovers(tmp_path)] == [True]
    write_folder(target, _fill("new"))
    assert (target / "model.keras").read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_a_write_killed_mid_swap_is_recovered(tmp_path: Path) -> None:
    """Killed after the old folder went aside and before the new one came in."""
    from model.folder import recover, write_folder

    target = tmp_path / "m"
    write_folder(target, _fill("old"))
    target.rename(tmp_path / ".m.old")  # what such a kill leaves
    assert recover(target) and (target / "model.keras").read_text() == "old"
    target.rename(tmp_path / ".m.old")

    def check_old_is_back(staging: Path) -> None:
        assert (target / "model.keras").read_text() == "old"
        _fill("new")(staging)

    write_folder(target, check_old_is_back)
    assert (target / "model.keras").read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_a_model_folder_that_does_not_load_is_unavailable(tmp_path: Path, backend: str) -> None:
    """Also with a model.onnx built from the model.keras that was there before."""
    from model.folder import save_model_folder
    from tagstream.errors import ExitStatus

    tagger = load_tagger("MSD_vgg", cache_dir=tmp_path / "cache")
    save_model_folder(tmp_path / "m", tagger.network, tagger.contract)
    assert load_tagger(str(tmp_path / "m"), backend=backend).contract == tagger.contract
    (tmp_path / "m" / "model.keras").write_bytes(b"not a keras file")
    with pytest.raises(ModelLoadError, match="cannot load") as raised:
        load_tagger(str(tmp_path / "m"), backend=backend)
    assert raised.value.status == ExitStatus.UNAVAILABLE
