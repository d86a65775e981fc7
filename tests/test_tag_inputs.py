"""python -m tools.tag takes folders (recursive) and ``-`` (paths on stdin); --json --top K."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tagstream.errors import ExitStatus
from tools.demo_audio import synthetic_music
from tools.tag import main


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("library")
    rng = np.random.default_rng(5)
    (root / "b" / "deep").mkdir(parents=True)
    for name in ("a.wav", "b/deep/c.flac", "b/d.wav"):
        sf.write(root / name, synthetic_music(3.5, rng=rng), 16000)
    (root / "b" / "notes.txt").write_text("not audio")
    return root


def _tag(argv: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out, err = io.StringIO(), io.StringIO()
    status = main([*argv, "--no-progress"], stdout=out, stderr=err)
    return status, out.getvalue()


def test_folders_stdin_and_json_top(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = library.parent / "extra.wav"
    sf.write(extra, synthetic_music(3.5, rng=np.random.default_rng(6)), 16000)
    status, out = _tag(
        [str(library / "b"), "-", "--json", "--top", "2"],
        monkeypatch,
        stdin=f"{library / 'a.wav'}\n\n{extra}\n{library / 'b' / 'd.wav'}\n",
    )
    assert status == ExitStatus.OK
    results = [json.loads(line) for line in out.splitlines()]
    # The folder's audio files recursively in sorted order (not notes.txt), then stdin's
    # paths; a path named twice is tagged twice, as always.
    assert [r["path"] for r in results] == [
        str(library / "b" / "d.wav"),
        str(library / "b" / "deep" / "c.flac"),
        str(library / "a.wav"),
        str(extra),
        str(library / "b" / "d.wav"),
    ]
    for result in results:
        assert len(result["tags"]) == 2
        assert list(result["tags"].values()) == sorted(result["tags"].values(), reverse=True)
        assert all(len(window["tags"]) == 2 for window in result["windows"])

    # Without --top, --json prints every tag, as before.
    status, out = _tag([str(library / "a.wav"), "--json"], monkeypatch)
    assert status == ExitStatus.OK and len(json.loads(out)["tags"]) == 50
    # A missing path still fails alone, after the others are tagged.
    status, out = _tag([str(library / "nope.wav"), str(library / "a.wav")], monkeypatch)
    assert status == ExitStatus.ERROR and out.startswith(str(library / "a.wav"))
