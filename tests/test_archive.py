"""Tagging an archive (python -m tools.archive, archive/): inputs, the Parquet store and resume,
the local engine, and the Ray engine on a real local Ray cluster.

The Ray tests start one local cluster for the module (``ray.init(num_cpus=2)``) and
run the real engine on it: its results equal the local engine's, an actor killed
with ``ray.kill`` mid-run still leaves every file tagged once, and a command
killed with SIGKILL is resumed to completion without a duplicate.  Runs are kept
from finishing before the test acts by a named pipe among the inputs: whoever
decodes it blocks until the test opens its other end.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from archive.engine import run_archive
from archive.inputs import InputFile, expand_inputs, expand_paths
from archive.local import LocalEngine
from archive.store import ArchiveSettings, ArchiveStore, FileFailure, StoreError, read_table
from model.tagging import FileTags, WindowTags, decode_file, tag_decoded, tag_file
from tagstream.errors import ExitStatus, UsageError
from tools.archive import main as archive_main
from tools.demo_audio import synthetic_music

ROOT = Path(__file__).resolve().parent.parent
SHARED_MUSIC = ROOT.parent / "shared" / "music"
#: Generated files in the archive the model tests tag ("a few dozen").
N_FILES = 24
BACKEND = "onnxruntime"  # the fastest per core; TensorFlow is tested by test_tag.py


def _wait_until(condition: Callable[[], object], what: str, timeout_s: float = 120.0) -> None:
    """Poll ``condition`` until true; fail naming ``what`` (a deadline, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout_s:.0f} s")
        time.sleep(0.05)


def _release(fifo: Path, *, wait: bool = True) -> bool:
    """Unblock whoever is opening ``fifo`` for reading: it then reads an empty file.

    With ``wait`` wait for a reader; without, try for a second (a killed run's reader
    may be gone already) and say whether there was one.
    """

    def opened() -> bool:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: no reader
            return False
        return True

    if wait:
        _wait_until(opened, f"a reader of {fifo}")
        return True
    for _ in range(20):
        if opened():
            return True
        time.sleep(0.05)
    return False


# -- inputs ---------------------------------------------------------------------------------


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_inputs_folders_patterns_manifests_and_stdin(tmp_path: Path) -> None:
    a = _touch(tmp_path / "lib" / "a.wav")
    b = _touch(tmp_path / "lib" / "deep" / "b.MP3")
    _touch(tmp_path / "lib" / "cover.jpg")
    c = _touch(tmp_path / "other" / "c.flac")
    text = tmp_path / "list.txt"
    text.write_text("# a comment\n\nother/c.flac\nlib/a.wav\n")
    table = tmp_path / "list.csv"
    table.write_text("title,path\nsong,other/c.flac\n")
    bare = tmp_path / "bare.csv"
    bare.write_text(f"{c}\n{b}\n")

    def listed(*args: str, stdin: str | None = None, **kw: Any) -> list[str]:
        stream = io.StringIO(stdin) if stdin is not None else None
        return [f.path for f in expand_inputs(args, stdin=stream, **kw)]  # type: ignore[union-attr]

    assert listed(str(tmp_path / "lib")) == [str(a), str(b)]  # recursive, extension filter
    assert listed(str(tmp_path / "lib"), extensions=(".wav",)) == [str(a)]
    assert listed(str(tmp_path / "**" / "*.flac")) == [str(c)]
    assert listed(str(text)) == [str(c), str(a)]  # relative to the manifest, in its order
    assert listed(str(table)) == [str(c)]
    assert listed(str(bare)) == [str(c), str(b)]  # no header: the first column
    assert listed("-", stdin=f"{a}\n\n{b}\n") == [str(a), str(b)]
    # Named twice (folder, manifest, file): listed once.
    assert listed(str(tmp_path / "lib"), str(text), str(a)) == [str(a), str(b), str(c)]
    assert listed(str(tmp_path / "cover.jpg*")) == []  # a pattern may match nothing
    with pytest.raises(UsageError, match="no such file"):
        listed(str(tmp_path / "missing.wav"))
    # A file that cannot be read comes as its error, for the errors table.
    gone = tmp_path / "gone.txt"
    gone.write_text(str(tmp_path / "vanished.wav") + "\n")
    [(path, error)] = list(expand_inputs([str(gone)]))  # type: ignore[misc]
    assert path == str(tmp_path / "vanished.wav") and isinstance(error, FileNotFoundError)
    # tools.tag's form: paths as given, missing ones passed on, .txt not a manifest.
    assert list(expand_paths(["nope.wav", str(text)], manifests=False, strict=False)) == [
        "nope.wav",
        str(text),
    ]


# -- store ----------------------------------------------------------------------------------

TAGS = ("rock", "pop", "female vocalists")
SETTINGS = ArchiveSettings(model="m", tags=TAGS, hop_seconds=0.0, pad=False, windows=True)


def _tags(path: str, value: float) -> FileTags:
    window = WindowTags(start_s=0.0, tags=dict.fromkeys(TAGS, value))
    return FileTags(path, 3.0, "m", dict.fromkeys(TAGS, value), (window, window))


def test_store_parts_index_and_refusals(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = [InputFile(f"/music/{i}.wav", 100 + i, 10**18 + i) for i in range(5)]
    with ArchiveStore(out, SETTINGS, part_files=2) as store:
        for i, f in enumerate(files[:4]):
            assert store.add(f, _tags(f.path, i / 10) if i != 3 else FileFailure("AudioError", "x"))
        assert not store.add(files[0], _tags(files[0].path, 0.9))  # never twice
        # A second run on the same folder is refused while this one holds it.
        with pytest.raises(StoreError, match="another archive run"):
            ArchiveStore(out, SETTINGS).open()
    tags, errors = read_table(out, "tags"), read_table(out, "errors")
    assert tags.column("path").to_pylist() == [f.path for f in files[:3]]
    assert tags.column("female vocalists").to_pylist() == pytest.approx([0.0, 0.1, 0.2])
    assert tags.column("mtime").cast("int64").to_pylist() == [f.mtime_ns for f in files[:3]]
    assert errors.column("reason").to_pylist() == ["x"]
    assert read_table(out, "windows").num_rows == 6

    # Left by a killed run: a temporary part and a windows part without its tags part.
    (out / "tags" / ".part-x.parquet.tmp").write_bytes(b"half a part")
    orphan = out / "windows" / "part-orphan.parquet"
    orphan.write_bytes((next((out / "windows").glob("part-*"))).read_bytes())
    with ArchiveStore(out, SETTINGS) as store:
        assert store.indexed == 4  # three tagged, one failed
        assert store.pending(files) == [files[4]]
    assert not (out / "tags" / ".part-x.parquet.tmp").exists() and not orphan.exists()
    with ArchiveStore(out, SETTINGS, retry_errors=True) as store:
        assert store.pending(files) == [files[3], files[4]]

    changed = ArchiveSettings("m", TAGS, hop_seconds=1.5, pad=False, windows=True)
    with pytest.raises(StoreError, match="hop_seconds"):
        ArchiveStore(out, changed).open()
    with pytest.raises(UsageError, match="clash"):
        ArchiveStore(tmp_path / "x", ArchiveSettings("m", ("path",), 0.0, False, False))


# -- the model: local engine, command, kill -9 -----------------------------------------------


@pytest.fixture(scope="module")
def onnx_tagger() -> Any:
    from model.tagger import load_tagger

    return load_tagger("MSD_musicnn", backend=BACKEND)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few dozen generated songs (3.5-6 s, some in sub-folders, some stereo 44.1 kHz),
    a corrupt file and one too short."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(16)
    for i in range(N_FILES):
        folder = root / ("" if i % 3 else f"disc{i % 2}")
        folder.mkdir(exist_ok=True)
        y = synthetic_music(3.5 + (i % 6) / 2, rng=rng, sample_rate=16000)
        if i % 4 == 1:
            sf.write(folder / f"song{i:02d}.flac", y, 16000)
        elif i % 4 == 2:
            from model.audio import resample

            stereo = resample(y, orig_sr=16000, target_sr=44100)
            sf.write(folder / f"song{i:02d}.wav", np.stack([stereo, stereo * 0.5], 1), 44100)
        else:
            sf.write(folder / f"song{i:02d}.wav", y, 16000)
    (root / "corrupt.mp3").write_bytes(b"\xff\xfb\x90\x00" + bytes(rng.integers(0, 255, 3000)))
    sf.write(root / "short.wav", synthetic_music(1.0, rng=rng), 16000)
    return root


def _audio_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.suffix in (".wav", ".flac", ".mp3"))


def _good_files(root: Path) -> list[str]:
    """The generated songs, without the corrupt and the short file."""
    return [p for p in _audio_files(root) if Path(p).stem.startswith("song")]


def _rows(out: Path) -> dict[str, np.ndarray]:
    table = read_table(out, "tags")
    tags = table.column_names[table.column_names.index("silent") + 1 :]
    values = np.stack([table.column(t).to_numpy() for t in tags], 1) if tags else np.zeros((0, 0))
    return dict(zip(table.column("path").to_pylist(), values, strict=True))


def _archive(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = archive_main(argv, stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_decoding_apart_from_tagging_gives_tag_file(archive: Path, onnx_tagger: Any) -> None:
    paths = _good_files(archive)[:4]
    decoded = [decode_file(p, onnx_tagger.contract, hop_seconds=1.0) for p in paths]
    together = tag_decoded(decoded, onnx_tagger, batch_size=5)  # batches across files
    for path, result in zip(paths, together, strict=True):
        alone = tag_file(path, onnx_tagger, hop_seconds=1.0)
        assert isinstance(result, FileTags)
        assert [w.start_s for w in result.windows] == [w.start_s for w in alone.windows]
        np.testing.assert_allclose(list(result.tags.values()), list(alone.tags.values()), atol=2e-6)
        assert result.duration_s == alone.duration_s


def test_local_archive_rows_errors_and_rerun(
    archive: Path, onnx_tagger: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [str(archive), "--out", str(out), "--backend", BACKEND, "--windows", "--no-progress"]
    status, stdout, _ = _archive([*argv, "--part-files", "5"])
    assert status == ExitStatus.ERROR  # two files failed; the others are tagged
    assert f"{N_FILES} files tagged" in stdout and "2 failed" in stdout

    table = read_table(out, "tags")
    assert sorted(table.column("path").to_pylist()) == _good_files(archive)
    assert len(list((out / "tags").glob("part-*.parquet"))) >= N_FILES // 5
    rows = _rows(out)
    for path in list(rows)[:6]:
        want = tag_file(path, onnx_tagger)
        np.testing.assert_allclose(rows[path], list(want.tags.values()), atol=1e-6)
    stat = os.stat(table.column("path")[0].as_py())
    assert table.column("size")[0].as_py() == stat.st_size
    assert table.column("mtime").cast("int64")[0].as_py() == stat.st_mtime_ns
    assert set(table.column("backend").to_pylist()) == {BACKEND}
    windows = read_table(out, "windows")
    assert windows.num_rows == sum(table.column("windows").to_pylist())
    errors = read_table(out, "errors").column("path").to_pylist()
    assert {Path(p).name for p in errors} == {"corrupt.mp3", "short.wav"}
    reasons = read_table(out, "errors").column("reason").to_pylist()
    assert any("cannot decode" in r for r in reasons) and any("too short" in r for r in reasons)

    # The same command again: nothing to do, nothing written twice, nothing failed anew.
    status, stdout, _ = _archive(argv)
    assert status == ExitStatus.OK
    assert "0 files tagged" in stdout and f"{N_FILES + 2} already in" in stdout
    assert read_table(out, "tags").num_rows == N_FILES
    # Other settings into the same folder: refused, exit status 2.
    status, _, err = _archive([*argv, "--hop-seconds", "1"])
    assert status == ExitStatus.USAGE and "other settings" in err


def test_local_engine_is_the_library(archive: Path, onnx_tagger: Any, tmp_path: Path) -> None:
    """run_archive with LocalEngine: what the command does, without the command."""
    files = list(expand_inputs([str(archive / "disc0")]))
    settings = ArchiveSettings("MSD_musicnn", onnx_tagger.tags, 0.0, False, False)
    with ArchiveStore(tmp_path / "out", settings) as store:
        summary = run_archive(files, store, LocalEngine(onnx_tagger), show_progress=False)
    assert (summary.tagged, summary.failed, summary.skipped) == (len(files), 0, 0)
    assert summary.audio_s == pytest.approx(sum(sf.info(f.path).duration for f in files))  # type: ignore[union-attr]


def _start_command(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tools.archive", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill9_and_resume(archive: Path, tmp_path: Path, extra: list[str]) -> None:
    """Start the command on the archive plus a named pipe, SIGKILL it once it has written
    parts, then rerun it without the pipe: every file exactly once."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in _good_files(archive):
        os.symlink(path, folder / Path(path).name)
    fifo = folder / "song10b.wav"  # in the middle of the sorted list
    os.mkfifo(fifo)
    out = tmp_path / "out"
    argv = [str(folder), "--out", str(out), "--backend", BACKEND, "--no-progress"]
    child = _start_command([*argv, "--part-files", "1", *extra])
    try:
        _wait_until(
            lambda: len(list((out / "tags").glob("part-*.parquet"))) >= 3 or child.poll(),
            "the first parts of the run",
        )
        assert child.poll() is None, child.communicate()
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    _release(fifo, wait=False)  # a decoder of the killed run may still wait on it
    fifo.unlink()
    first = read_table(out, "tags").column("path").to_pylist()
    assert 3 <= len(first) < N_FILES and len(set(first)) == len(first)

    rerun = _start_command([*argv, *extra])
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == ExitStatus.OK, stderr
    assert f"{N_FILES - len(first)} files tagged" in stdout, stdout
    paths = read_table(out, "tags").column("path").to_pylist()
    assert Counter(paths) == Counter(str(folder / Path(p).name) for p in _good_files(archive))
    assert read_table(out, "errors").num_rows == 0
    assert not list(out.rglob(".part-*"))


def test_kill9_then_resume_local(archive: Path, tmp_path: Path) -> None:
    _kill9_and_resume(archive, tmp_path, [])


# -- a real local Ray cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A local Ray cluster of 2 CPUs, shared by the module's Ray tests."""
    ray = pytest.importorskip(
        "ray", reason="Ray is not installed: pip install -r requirements-dev.txt"
    )
    import logging

    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _ray_engine(onnx_tagger: Any, **kw: Any) -> Any:
    from archive.ray_engine import RayEngine

    return RayEngine(
        onnx_tagger.contract,
        model="MSD_musicnn",
        cache_dir="~/.cache/tagstream",
        backend=BACKEND,
        **kw,
    )


def test_ray_equals_local(
    ray_cluster: Any, archive: Path, onnx_tagger: Any, tmp_path: Path
) -> None:
    inputs = [str(archive)]
    real = sorted(SHARED_MUSIC.glob("gtzan/*.00001.flac"))[:4]  # evaluation only, when present
    inputs += [str(p) for p in real]
    files = list(expand_inputs(inputs))
    settings = ArchiveSettings("MSD_musicnn", onnx_tagger.tags, 0.0, False, False)
    summaries = {}
    for name, engine in (("local", LocalEngine(onnx_tagger)), ("ray", _ray_engine(onnx_tagger))):
        with ArchiveStore(tmp_path / name, settings, part_files=7) as store:
            summaries[name] = run_archive(files, store, engine, show_progress=False)
        engine.close()
    assert summaries["ray"].tagged == summaries["local"].tagged == N_FILES + len(real)
    assert summaries["ray"].failed == summaries["local"].failed == 2
    local, ray = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert sorted(local) == sorted(ray)
    for path in local:
        np.testing.assert_allclose(ray[path], local[path], atol=1e-5, err_msg=path)
    local_errors = read_table(tmp_path / "local", "errors").sort_by("path").to_pydict()
    assert read_table(tmp_path / "ray", "errors").sort_by("path").to_pydict() == local_errors


def _tag_actors(ray: Any) -> dict[str, dict[str, Any]]:
    from ray._private import state

    return {k: v for k, v in state.actors().items() if "TagActor" in v["ActorClassName"]}


def test_ray_actor_killed_mid_run(
    ray_cluster: Any, archive: Path, onnx_tagger: Any, tmp_path: Path
) -> None:
    ray = ray_cluster
    folder = tmp_path / "in"
    folder.mkdir()
    for path in _audio_files(archive):
        os.symlink(path, folder / Path(path).name)
    fifo = folder / "zz.wav"  # the last decoding task waits on it until the test releases it
    os.mkfifo(fifo)
    files = list(expand_inputs([str(folder)]))
    engine = _ray_engine(onnx_tagger, files_per_batch=2)
    results: list[tuple[InputFile, Any]] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            results.extend(engine.results(files, threading.Event()))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: len(results) >= 4 or failure, "the first results")
        alive = {k: v for k, v in _tag_actors(ray).items() if v["State"] == "ALIVE"}
        assert alive, "no tagging actor is alive mid-run"
        actor_id = next(iter(alive))
        core = ray._private.worker.global_worker.core_worker
        ray.kill(core.get_actor_handle(ray.ActorID.from_hex(actor_id)), no_restart=False)
        _wait_until(
            lambda: _tag_actors(ray)[actor_id]["NumRestarts"] >= 1, "the killed actor's restart"
        )
    finally:
        _release(fifo)
        thread.join(timeout=300)
        engine.close()
    assert not failure, failure
    assert not thread.is_alive()
    counts = Counter(f.path for f, _ in results)
    assert sorted(counts) == sorted(f.path for f in files)  # type: ignore[union-attr]
    assert set(counts.values()) == {1}
    failed = {Path(f.path).name for f, r in results if isinstance(r, FileFailure)}
    assert failed == {"corrupt.mp3", "short.wav", fifo.name}
    # Through the store (what the command does), each file is kept exactly once.
    settings = ArchiveSettings("MSD_musicnn", onnx_tagger.tags, 0.0, False, False)
    with ArchiveStore(tmp_path / "out", settings) as store:
        for file, result in results:
            store.add(file, result)
    assert read_table(tmp_path / "out", "tags").num_rows == N_FILES


def test_ray_kill9_then_resume(ray_cluster: Any, archive: Path, tmp_path: Path) -> None:
    address = ray_cluster.get_runtime_context().gcs_address
    # Two files per actor call: results reach the driver before the blocked task's.
    _kill9_and_resume(
        archive, tmp_path, ["--engine", "ray", "--address", address, "--files-per-batch", "2"]
    )
