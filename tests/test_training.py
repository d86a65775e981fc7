"""Tests of training/: datasets, feature cache and pipeline, training, export, evaluation.

Tiny real components throughout: synthesized audio written to disk and decoded,
real Keras networks (narrow widths), real TFLite conversion.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from model.audio import load_audio
from model.contract import MSD_TAGS, ModelContract
from model.features import log_mel
from training.config import ConfigError, load_train_config
from training.datasets import (
    DatasetError,
    distill_dataset,
    manifest_dataset,
    msd_dataset,
    read_lastfm_db,
    read_lastfm_json,
)
from training.pipeline import (
    FLOAT16_ATOL,
    FeatureCache,
    crop_windows,
    fixed_windows,
    make_dataset,
    read_windows,
    teacher_windows,
)
from training.synthetic import SYNTHETIC_TAGS, write_synthetic_set

FIXTURES = Path(__file__).parent / "fixtures" / "training"
SR = 22050
WINDOW = 187


def _write_tone(path: Path, *, seconds: float, freq: float, sr: int = SR) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 labelled 4 s clips (manifest.csv) shared by the training tests."""
    return write_synthetic_set(tmp_path_factory.mktemp("synthetic"), n_files=24, seconds=4.0)


def _config(tmp_path: Path, manifest: Path, **train: object) -> Path:
    settings = {"epochs": 2, "batch_size": 8, "crops_per_file": 2, "seed": 0, **train}
    text = f"""
[data]
format = "manifest"
manifest = "{manifest}"
cache_dir = "{tmp_path / "cache"}"
valid_fraction = 0.25
test_fraction = 0.2
[model]
architecture = "student"
width = 0.25
[train]
""" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[train]\nepochs = "many"', "train.epochs: expected an integer"),
        ("[train]\nepoch = 3", "train.epoch: unknown setting"),
        ('[model]\narchitecture = "resnet50"', "model.architecture: expected one of"),
        ('[model]\nfreeze = "frontend"', "model.freeze:"),
        ('[model]\nfreeze = "all"', "model.freeze: expected one of"),
        ('[data]\nformat = "manifest"', "data.manifest: required"),
        ("[optim]\nlr = 1", "optim: unknown section"),
        ("[train]\nbatch_size = 0", "train.batch_size: must be greater than 0"),
        ('[model]\narchitecture = "fcn4"\ninit = "MSD_musicnn"', "model.init:"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[data]\nmanifest = "m.csv"\n' + text if "[data]" not in text else text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_train_config(path)


def test_config_round_trips_through_a_checkpoint_dict(tmp_path: Path) -> None:
    config = load_train_config(_config(tmp_path, tmp_path / "m.csv"), overrides={"train.epochs": 7})
    again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.train.epochs == 7
    assert again.resolve("m.csv") == tmp_path / "m.csv"


# --------------------------------------------------------------------------- datasets


def test_manifest_dataset_reads_tags_and_splits(synthetic_set: Path) -> None:
    dataset = manifest_dataset(synthetic_set, valid_fraction=0.25, test_fraction=0.25, seed=1)
    assert dataset.tags == tuple(sorted(SYNTHETIC_TAGS))
    tracks = dataset.train + dataset.valid + dataset.test
    assert len(tracks) == 24 and (len(dataset.valid), len(dataset.test)) == (6, 6)
    assert len({t.path for t in tracks}) == 24
    rows = {r["path"]: r["tags"] for r in __import__("csv").DictReader(synthetic_set.open())}
    for track in tracks:
        expected = set(filter(None, rows[track.path.name].split(";")))
        assert {dataset.tags[i] for i in np.flatnonzero(track.labels)} == expected


def test_manifest_missing_audio_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,tags\nnope.wav,rock\n")
    with pytest.raises(DatasetError, match=r"nope\.wav"):
        manifest_dataset(tmp_path / "m.csv")


def _msd_audio(root: Path) -> None:
    ids = [
        line
        for split in ("train", "valid", "test")
        for line in (FIXTURES / "msd_split" / f"{split}_x_msd_id.txt").read_text().split()
    ]
    for i, track_id in enumerate(ids[:-1]):  # the last test track has no audio
        _write_tone(
            root / track_id[2] / track_id[3] / f"{track_id}.clip.mp3.wav",
            seconds=1.0,
            freq=200 + 50 * i,
        )


def _lastfm_db(path: Path) -> None:
    """A lastfm_tags.db with the layout of the real one, from the JSON fixtures."""
    connection = sqlite3.connect(path)
    connection.executescript(
        "CREATE TABLE tids (tid TEXT); CREATE TABLE tags (tag TEXT);"
        "CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT);"
    )
    tag_rows: dict[str, int] = {}
    for json_path in sorted((FIXTURES / "lastfm").rglob("*.json")):
        record = json.loads(json_path.read_text())
        tid_row = connection.execute("INSERT INTO tids VALUES (?)", (record["track_id"],)).lastrowid
        for tag, value in record["tags"]:
            if tag not in tag_rows:
                tag_rows[tag] = connection.execute("INSERT INTO tags VALUES (?)", (tag,)).lastrowid
            connection.execute(
                "INSERT INTO tid_tag VALUES (?, ?, ?)", (tid_row, tag_rows[tag], float(value))
            )
    connection.commit()
    connection.close()


def test_lastfm_db_and_json_agree(tmp_path: Path) -> None:
    _lastfm_db(tmp_path / "lastfm_tags.db")
    ids = ["TRAAAAA128F0000001", "TRAAAAD128F0000004", "TRAAAAH128F0000099"]
    from_db = read_lastfm_db(tmp_path / "lastfm_tags.db", ids, MSD_TAGS)
    from_json = read_lastfm_json(FIXTURES / "lastfm", ids, MSD_TAGS)
    assert from_db == from_json
    assert from_db["TRAAAAA128F0000001"] == {"rock": 100.0, "guitar": 60.0, "pop": 10.0}
    assert "TRAAAAH128F0000099" not in from_db


@pytest.mark.parametrize("source", ["db", "json", "npy"])
def test_msd_dataset(tmp_path: Path, source: str) -> None:
    audio = tmp_path / "audio"
    _msd_audio(audio)
    split_dir = tmp_path / "split"
    shutil.copytree(FIXTURES / "msd_split", split_dir)
    kwargs: dict[str, Path] = {}
    if source == "db":
        _lastfm_db(tmp_path / "lastfm_tags.db")
        kwargs["tags_db"] = tmp_path / "lastfm_tags.db"
    elif source == "json":
        kwargs["tags_json_dir"] = FIXTURES / "lastfm"
    else:
        for split, n in (("train", 4), ("valid", 2), ("test", 2)):
            y = np.zeros((n, 50), dtype=np.int64)
            y[:, MSD_TAGS.index("rock")] = 1
            np.save(split_dir / f"{split}_y.npy", y)
    dataset = msd_dataset(audio_dir=audio, split_dir=split_dir, **kwargs)
    assert dataset.tags == MSD_TAGS
    assert [len(dataset.train), len(dataset.valid), len(dataset.test)] == [4, 2, 1]
    assert dataset.train[0].path.name.startswith("TRAAAAA128F0000001")
    on = {t.track_id: {MSD_TAGS[i] for i in np.flatnonzero(t.labels)} for t in dataset.train}
    if source == "npy":
        assert all(tags == {"rock"} for tags in on.values())
    else:  # Last.fm values >= 50 count
        assert on == {
            "TRAAAAA128F0000001": {"rock", "guitar"},
            "TRAAAAB128F0000002": {"pop", "dance"},
            "TRAAAAC128F0000003": {"jazz"},
            "TRAAAAD128F0000004": {"rock", "jazz"},
        }


def _tiny_teacher(folder: Path, tags: tuple[str, ...] = ("calm", "loud", "busy")) -> Path:
    from model.architectures import build_student

    network = build_student(n_tags=len(tags), width=0.125, name="teacher")
    folder.mkdir(parents=True, exist_ok=True)
    network.save(folder / "model.keras")
    ModelContract(name="tiny_teacher", architecture="student", tags=tags).save(folder)
    return folder


def test_distill_dataset_uses_teacher_windows_as_soft_targets(tmp_path: Path) -> None:
    from model.tagger import load_tagger

    for i, seconds in enumerate((4.0, 7.0, 2.0, 5.0)):
        _write_tone(tmp_path / "music" / f"song{i}.ogg.wav", seconds=seconds, freq=300 + 100 * i)
    teacher = str(_tiny_teacher(tmp_path / "teacher"))
    dataset = distill_dataset(tmp_path / "music", teacher=teacher, valid_fraction=0.25)
    assert dataset.tags == ("calm", "loud", "busy") and dataset.teacher == teacher
    assert len(dataset.train) == 3 and len(dataset.valid) == 1
    assert all(t.labels is None for t in dataset.train)
    cache = FeatureCache(tmp_path / "cache")
    table = teacher_windows(
        dataset.train, cache, teacher=teacher, window_frames=WINDOW, hop_frames=94, progress=False
    )
    assert table.soft and table.target.shape == (len(table), 3)
    expected = load_tagger(teacher).predict(read_windows(table, window_frames=WINDOW))
    np.testing.assert_allclose(table.target, expected, atol=1e-6)
    # cached: a second pass reads the same targets back without the teacher
    again = teacher_windows(
        dataset.train, cache, teacher=teacher, window_frames=WINDOW, hop_frames=94, progress=False
    )
    np.testing.assert_array_equal(again.target, table.target)


# --------------------------------------------------------------------------- pipeline


def test_feature_cache_is_float16_log_mel_keyed_by_mtime(tmp_path: Path) -> None:
    path = _write_tone(tmp_path / "a.wav", seconds=2.0, freq=440)
    cache = FeatureCache(tmp_path / "cache")
    cached = cache.load(path)
    assert cached.dtype == np.float16
    expected = log_mel(load_audio(path))
    assert cached.shape == expected.shape
    np.testing.assert_allclose(cached.astype(np.float32), expected, atol=FLOAT16_ATOL)
    first = cache.path_for(path)
    _write_tone(path, seconds=3.0, freq=880)
    os.utime(path, ns=(1, 10**18))
    assert cache.path_for(path) != first
    assert cache.load(path).shape[0] > cached.shape[0]
    assert FeatureCache(tmp_path / "cache", max_seconds=1.0).path_for(path) != cache.path_for(path)


def test_pipeline_random_crops_shapes_and_batching(tmp_path: Path, synthetic_set: Path) -> None:
    import tensorflow as tf

    dataset = manifest_dataset(synthetic_set, valid_fraction=0.0)
    cache = FeatureCache(tmp_path / "cache")
    table = crop_windows(dataset.train, cache, n_tags=4, crops_per_file=3, progress=False)
    assert len(table) == 72 and np.all(table.start == -1)
    tf.random.set_seed(0)
    ds = make_dataset(table, window_frames=WINDOW, batch_size=16, seed=0)
    batches = list(ds)
    assert [len(x) for x, _ in batches] == [16, 16, 16, 16, 8]
    x, y = batches[0]
    assert x.shape == (16, WINDOW, 96) and x.dtype == tf.float32 and y.shape == (16, 4)
    # every batch row is a contiguous crop of its track's cached features
    rows = list(crop_windows(dataset.train[:1], cache, n_tags=4, progress=False).track)
    one = make_dataset(
        crop_windows(dataset.train[:1], cache, n_tags=4, crops_per_file=8, progress=False),
        window_frames=WINDOW,
        batch_size=8,
        shuffle=False,
    )
    crops = next(iter(one))[0].numpy()
    mel = np.load(table.feature_files[rows[0]]).astype(np.float32)
    starts = []
    for crop in crops:
        matches = [
            s for s in range(len(mel) - WINDOW + 1) if np.array_equal(mel[s : s + WINDOW], crop)
        ]
        assert matches
        starts.append(matches[0])
    assert len(set(starts)) > 1  # crops are random


def test_fixed_windows_pad_short_files_and_space_long_ones(tmp_path: Path) -> None:
    from training.datasets import Track

    short = _write_tone(tmp_path / "short.wav", seconds=1.0, freq=300)
    long = _write_tone(tmp_path / "long.wav", seconds=20.0, freq=300)
    tracks = [Track(short, np.array([1.0], np.float32)), Track(long, np.array([0.0], np.float32))]
    cache = FeatureCache(tmp_path / "cache")
    table = fixed_windows(tracks, cache, n_tags=1, window_frames=WINDOW, progress=False)
    n_long = table.n_frames[1]
    assert list(table.track).count(0) == 1 and list(table.track).count(1) == n_long // WINDOW
    windows = read_windows(table, window_frames=WINDOW)
    assert windows.shape == (len(table), WINDOW, 96)
    assert np.all(windows[0, table.n_frames[0] :] == 0)  # zero padding after 1 s
    limited = fixed_windows(
        tracks, cache, n_tags=1, window_frames=WINDOW, max_per_file=3, progress=False
    )
    assert list(limited.track).count(1) == 3
    assert limited.start[limited.track == 1][-1] == (n_long // WINDOW - 1) * WINDOW


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize(
    "name", ["fcn4", "crnn", "musicnn", "short_chunk_resnet", "student", "vgg"]
)
def test_architectures_take_mel_and_return_tags(name: str, rng: np.random.Generator) -> None:
    from model.architectures import ARCHITECTURES

    network = ARCHITECTURES[name](n_tags=5, width=0.125, dropout=0.1)
    assert network.inputs[0].name == "mel" and network.layers[-1].name == "tags"
    assert network.layers[-1].output is network.outputs[0]
    out = np.asarray(network(rng.random((2, WINDOW, 96), dtype=np.float32), training=False))
    assert out.shape == (2, 5) and np.all((out >= 0) & (out <= 1))


def test_finetune_musicnn_replaces_head_and_freezes(tmp_path: Path) -> None:
    from training.architectures import FRONTEND_LAYERS, MIDEND_LAYERS, build_model
    from training.config import ModelSettings

    settings = ModelSettings(architecture="musicnn", init="MSD_musicnn", freeze="frontend+midend")
    try:
        network = build_model(settings, tags=("calm", "energetic"))
    except Exception as exc:  # the musicnn wheel is an optional extra
        if "musicnn" in str(exc):
            pytest.skip(f"pretrained MSD_musicnn unavailable: {exc}")
        raise
    assert network.get_layer("dense_1").units == 2
    frozen = {layer.name for layer in network.layers if not layer.trainable}
    assert frozen >= FRONTEND_LAYERS | MIDEND_LAYERS
    assert network.get_layer("dense").trainable
    before = network.get_layer("conv2d_5").get_weights()[0].copy()
    head = network.get_layer("dense_1").get_weights()[0].copy()
    network.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(0).random((4, WINDOW, 96), dtype=np.float32) * 3
    network.fit(x, np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32), epochs=1, verbose=0)
    np.testing.assert_array_equal(network.get_layer("conv2d_5").get_weights()[0], before)
    assert not np.array_equal(network.get_layer("dense_1").get_weights()[0], head)


# --------------------------------------------------------------------------- training, export


def test_a_few_steps_lower_the_loss(tmp_path: Path, synthetic_set: Path) -> None:
    import keras

    from model.architectures import build_student
    from training.train import compile_model

    config = load_train_config(_config(tmp_path, synthetic_set), overrides={"train.epochs": 1})
    dataset = manifest_dataset(synthetic_set, valid_fraction=0.0)
    cache = FeatureCache(tmp_path / "cache")
    table = fixed_windows(dataset.train, cache, n_tags=4, window_frames=WINDOW, progress=False)
    x, y = read_windows(table, window_frames=WINDOW), table.target
    keras.utils.set_random_seed(0)
    network = build_student(n_tags=4, width=0.25)
    compile_model(network, config, steps_per_epoch=30)
    history = network.fit(x, y, batch_size=8, epochs=8, verbose=0, shuffle=False)
    losses = history.history["loss"]  # training-mode loss, averaged over each epoch's 3 steps
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_set: Path) -> tuple[Path, Path]:
    """A 2-epoch run of a narrow student, resumed for a third epoch."""
    from training.train import train

    tmp = tmp_path_factory.mktemp("run")
    config_path = _config(tmp, synthetic_set)
    result = train(load_train_config(config_path), tmp / "run", verbose=0, progress=False)
    assert result.epochs_done == 2
    resumed = train(
        load_train_config(config_path, overrides={"train.epochs": 3}),
        tmp / "run",
        resume=True,
        verbose=0,
        progress=False,
    )
    assert resumed.epochs_done == 3
    return tmp / "run", config_path


def test_training_writes_checkpoints_with_config_and_tensorboard(
    trained_run: tuple[Path, Path],
) -> None:
    run, _ = trained_run
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    contract = ModelContract.load(run / "checkpoints" / "last")
    assert state["epoch"] == 3 and contract.tags == tuple(sorted(SYNTHETIC_TAGS))
    assert state["config"]["model"]["architecture"] == contract.architecture == "student"
    assert contract.extra["epoch"] == 3 and contract.name == "run"
    assert set(state["logs"]) >= {"loss", "val_loss", "val_roc_auc_macro", "val_pr_auc_macro"}
    assert (run / "checkpoints" / "best" / "model.keras").is_file()
    from training.tensorboard_plot import read_scalars

    scalars = read_scalars(run / "tensorboard")
    assert len(scalars["train"]["epoch_loss"]) == 3
    assert "epoch_learning_rate" in scalars["train"]
    assert {"epoch_roc_auc_macro", "epoch_pr_auc_macro"} <= set(scalars["validation"])
    assert any(t.startswith("roc_auc_per_tag/") for t in scalars["tags"])


def test_resume_refuses_a_changed_model(trained_run: tuple[Path, Path]) -> None:
    from training.train import train

    run, config_path = trained_run
    changed = load_train_config(config_path, overrides={"model.width": 0.5})
    with pytest.raises(ConfigError, match=r"model\.width"):
        train(changed, run, resume=True, verbose=0, progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(load_train_config(config_path), run, verbose=0, progress=False)


def test_export_loads_with_identical_outputs_and_close_tflite(
    trained_run: tuple[Path, Path], tmp_path: Path, rng: np.random.Generator
) -> None:
    from model.tagger import Tagger, load_tagger
    from training.__main__ import main
    from training.checkpoint import load_checkpoint
    from training.export import TFLITE_ATOL, TFLiteTagger

    run, _ = trained_run
    stdout = io.StringIO()
    out = str(tmp_path / "m")
    code = main(
        ["export", "--checkpoint", str(run), "--out", out, "--name", "syn", "--tflite"],
        stdout=stdout,
    )
    assert code == 0, stdout.getvalue()
    exported = load_tagger(str(tmp_path / "m"), device="cpu")
    assert exported.name == "syn" and exported.tags == tuple(sorted(SYNTHETIC_TAGS))
    network, _, _ = load_checkpoint(run / "checkpoints" / "best")
    original = Tagger(network, exported.contract, device="cpu")
    windows = rng.random((5, WINDOW, 96), dtype=np.float32) * 4
    np.testing.assert_array_equal(exported.predict(windows), original.predict(windows))
    lite = TFLiteTagger(tmp_path / "m" / "model.tflite").predict(windows)
    np.testing.assert_allclose(lite, original.predict(windows), atol=TFLITE_ATOL)
    # The contract is the checkpoint's, copied (renamed); training state stays behind.
    checkpoint = ModelContract.load(run / "checkpoints" / "best")
    assert exported.contract == checkpoint.replace(name="syn")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "contract.json",
        "model.keras",
        "model.onnx",
        "model.tflite",
    ]
    code = main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "m"), "--no-onnx"])
    assert code == 0  # replaces the folder, atomically: nothing left beside it
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["contract.json", "model.keras"]
    assert load_tagger(str(tmp_path / "m")).contract == checkpoint
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m")]


def test_evaluate_cli_writes_json_and_png(trained_run: tuple[Path, Path], tmp_path: Path) -> None:
    from training.__main__ import main

    run, config_path = trained_run
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(
        [
            "evaluate",
            "--model",
            str(run),
            "--config",
            str(config_path),
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        stdout=stdout,
        stderr=stderr,
    )
    assert code == 0, stderr.getvalue()
    result = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(result["per_tag"]) == set(SYNTHETIC_TAGS)
    assert result["n_tracks"] == result["n_items"] == 5  # test_fraction 0.2 of 24 files
    assert (tmp_path / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "macro" in stdout.getvalue() and "low_tone" in stdout.getvalue()


def test_cli_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    from tagstream.errors import ExitStatus
    from training.__main__ import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nmanifest = "m.csv"\n[train]\nlearning_rate = "fast"\n')
    stderr = io.StringIO()
    assert main(["train", "--config", str(bad)], stderr=stderr) == ExitStatus.USAGE
    assert stderr.getvalue() == "error: train.learning_rate: expected a number, got 'fast'\n"
    stderr = io.StringIO()
    code = main(
        ["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x")], stderr=stderr
    )
    assert code == ExitStatus.UNAVAILABLE and "not a checkpoint" in stderr.getvalue()
    stderr = io.StringIO()
    code = main(["evaluate", "--model", "MSD_musicnn", "--manifest", "m.csv"], stderr=stderr)
    assert code == ExitStatus.UNAVAILABLE and "not found" in stderr.getvalue()


# --------------------------------------------------------------------------- one settings schema


def test_architecture_choices_are_the_registry() -> None:
    from config import choices
    from model.architectures import ARCHITECTURES
    from training.config import ModelSettings

    assert choices(ModelSettings, "architecture") == tuple(ARCHITECTURES)


_CHILD = """
import sys
from training.__main__ import main
status = main(sys.argv[1:])
print("loaded:", ",".join(m for m in ("tensorflow", "keras") if m in sys.modules))
sys.exit(status)
"""


@pytest.mark.parametrize(
    ("setting", "status", "message"),
    [
        ("[train]\nlearning_rate = inf", 2, "train.learning_rate: expected a finite number"),
        ("[train]\nbatch_size = 1_000_000_000", 2, "train.batch_size: must be at most"),
        ('[model]\narchitecture = "resnet50"', 2, "model.architecture: expected one of"),
        ("[model]\ndropout = 1.0", 2, "model.dropout: must be at most"),
        (b"[data]\ncache_dir = '\xff'", 2, "not UTF-8"),
        ("--out holds a run", 2, "already holds a run"),
        ("--resume nothing", 2, "holds no run to resume"),
        ("manifest missing", 3, "manifest not found"),
    ],
)
def test_bad_settings_fail_before_tensorflow_loads(
    tmp_path: Path, setting: str | bytes, status: int, message: str
) -> None:
    """Every check that can fail runs before TensorFlow is imported (so in well under a second)."""
    (tmp_path / "m.csv").write_text("path,tags\n")
    config = tmp_path / "train.toml"
    base = f'[data]\nmanifest = "{tmp_path / "m.csv"}"\n'
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    if isinstance(setting, bytes):
        config.write_bytes(setting)
    elif setting.startswith("--out"):
        config.write_text(base)
        (tmp_path / "run" / "checkpoints" / "last").mkdir(parents=True)
    elif setting.startswith("--resume"):
        config.write_text(base)
        args.append("--resume")
    elif setting.startswith("manifest"):
        config.write_text('[data]\nmanifest = "nope.csv"\n')
    else:
        config.write_text(base + setting + "\n")
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == status, child.stderr
    assert message in child.stderr.strip().splitlines()[-1]
    assert child.stderr.startswith("error: ")
    assert child.stdout == "loaded: \n"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["evaluate", "--model", "MSD_nope", "--manifest", "m.csv"], "neither a pretrained"),
        (["evaluate", "--model", ".", "--manifest", "m.csv"], "not a checkpoint"),
        (["export", "--checkpoint", ".", "--out", "x"], "not a checkpoint"),
    ],
)
def test_missing_models_fail_before_tensorflow_loads(
    tmp_path: Path, command: list[str], message: str
) -> None:
    (tmp_path / "m.csv").write_text("path,tags\n")
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, *command],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 3, child.stderr
    assert child.stderr.startswith("error: ") and message in child.stderr
    assert child.stdout == "loaded: \n"


def test_ctrl_c_stops_training_with_130(tmp_path: Path) -> None:
    """A batch command: Ctrl-C exits 130 (here while it waits to read its manifest)."""
    manifest = tmp_path / "m.csv"
    os.mkfifo(manifest)
    config = tmp_path / "train.toml"
    config.write_text(f'[data]\nmanifest = "{manifest}"\n')
    child = subprocess.Popen(
        [sys.executable, "-m", "training", "train", "--config", str(config), "--out", "run"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with manifest.open("w"):  # returns once the child has opened it to read
            child.send_signal(signal.SIGINT)
            _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr


def test_unreadable_manifest_is_one_line_with_status_3(tmp_path: Path) -> None:
    from training.__main__ import main

    (tmp_path / "m.csv").write_bytes(b"path,tags\n\xff.wav,rock\n")
    config = tmp_path / "train.toml"
    config.write_text(f'[data]\nmanifest = "{tmp_path / "m.csv"}"\n')
    stderr = io.StringIO()
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "r")], stderr=stderr)
    assert code == 3 and stderr.getvalue().startswith("error: ")
    assert "not UTF-8 text" in stderr.getvalue()


# ----------------------------------------------------------- checkpoints are model folders


def test_checkpoint_loads_as_a_model_folder(
    trained_run: tuple[Path, Path], rng: np.random.Generator
) -> None:
    from model.tagger import load_tagger
    from training.checkpoint import load_checkpoint

    run, _ = trained_run
    for name in ("last", "best"):
        tagger = load_tagger(str(run / "checkpoints" / name), device="cpu")
        assert tagger.contract == ModelContract.load(run / "checkpoints" / name)
        assert tagger.tags == tuple(sorted(SYNTHETIC_TAGS))
    network, contract, state = load_checkpoint(run / "checkpoints" / "last")
    assert contract == tagger.contract.replace(source=contract.source, extra=contract.extra)
    assert state["epoch"] == contract.extra["epoch"] == 3
    windows = rng.random((3, WINDOW, 96), dtype=np.float32) * 4
    last = load_tagger(str(run / "checkpoints" / "last"), device="cpu")
    np.testing.assert_allclose(
        last.predict(windows), np.asarray(network(windows, training=False)), atol=1e-6
    )
