"""tools.tag on the real recordings of ../shared/music (evaluation only; skipped when absent)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tagstream.errors import ExitStatus
from tools.tag import main

MUSIC = Path(__file__).resolve().parents[2] / "shared" / "music"
pytestmark = pytest.mark.skipif(
    not MUSIC.is_dir(), reason=f"{MUSIC} is absent; real-music checks need ../shared/music"
)


def _first_of_each_format() -> list[Path]:
    found: dict[str, Path] = {}
    for path in sorted(MUSIC.rglob("*")):
        if path.suffix in (".mp3", ".flac", ".ogg", ".wav"):
            found.setdefault(path.suffix, path)
    return list(found.values())


def test_every_format_in_shared_music_is_tagged() -> None:
    files = _first_of_each_format()
    assert {p.suffix for p in files} >= {".mp3", ".flac", ".ogg"}
    out, err = io.StringIO(), io.StringIO()
    status = main([*map(str, files), "--json", "--no-progress"], stdout=out, stderr=err)
    assert status == ExitStatus.OK, err.getvalue()
    assert len(out.getvalue().splitlines()) == len(files)


def test_msd_preview_is_tagged_blues() -> None:
    preview = next((MUSIC / "msd").glob("*.mp3"))
    out = io.StringIO()
    assert main([str(preview), "--json", "--no-progress"], stdout=out) == ExitStatus.OK
    tags = json.loads(out.getvalue())["tags"]
    assert max(tags, key=tags.get) == "blues"
