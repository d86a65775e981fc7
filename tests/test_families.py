"""Tag families: the default grouping, max scoring, the TOML table and its errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from config import ConfigError
from model.contract import MSD_TAGS
from monitor.families import (
    DEFAULT_FAMILIES,
    Families,
    families_from_toml,
    load_families,
)

SHARED_MUSIC = Path(__file__).resolve().parents[2] / "shared" / "music"

#: The tags the module doc says belong to no family: eras, moods, voices, guitar, experimental.
UNGROUPED = {
    "60s", "70s", "80s", "90s", "00s", "oldies",
    "beautiful", "Mellow", "party", "sexy", "catchy", "sad", "happy",
    "female vocalists", "female vocalist", "male vocalists",
    "guitar", "experimental",
}  # fmt: skip


def test_default_grouping_covers_every_tag_once() -> None:
    grouped = [tag for _, tags in DEFAULT_FAMILIES.groups for tag in tags]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) <= set(MSD_TAGS)
    assert set(DEFAULT_FAMILIES.ungrouped()) == UNGROUPED
    assert len(grouped) + len(UNGROUPED) == len(MSD_TAGS) == 50
    assert DEFAULT_FAMILIES.family_of("heavy metal") == "metal"
    assert DEFAULT_FAMILIES.family_of("Hip-Hop") == "hip-hop"
    assert DEFAULT_FAMILIES.family_of("80s") is None


def test_a_family_scores_its_largest_member(rng: np.random.Generator) -> None:
    probabilities = rng.uniform(0, 1, size=len(MSD_TAGS)).astype(np.float32)
    scores = DEFAULT_FAMILIES.score_map(probabilities, MSD_TAGS)
    for name, tags in DEFAULT_FAMILIES.groups:
        expected = max(probabilities[MSD_TAGS.index(t)] for t in tags)
        assert scores[name] == pytest.approx(expected)


def test_family_size_does_not_win_the_dominant_family() -> None:
    """Rock has nine tags, metal two: a metal track with rock neighbours is still metal."""
    p = dict.fromkeys(MSD_TAGS, 0.0)
    p.update({"metal": 0.45, "heavy metal": 0.40})
    p.update(dict.fromkeys(DEFAULT_FAMILIES.members("rock"), 0.30))  # nine tags at 0.30
    probabilities = np.array([p[t] for t in MSD_TAGS], dtype=np.float32)
    assert DEFAULT_FAMILIES.dominant(probabilities, MSD_TAGS) == ("metal", pytest.approx(0.45))
    assert DEFAULT_FAMILIES.dominant(probabilities, MSD_TAGS, min_score=0.5) is None


def test_descriptors_never_decide_the_dominant_family() -> None:
    p = dict.fromkeys(MSD_TAGS, 0.0)
    p.update({"female vocalists": 0.9, "80s": 0.8, "pop": 0.2})
    probabilities = np.array([p[t] for t in MSD_TAGS], dtype=np.float32)
    assert DEFAULT_FAMILIES.dominant(probabilities, MSD_TAGS) == ("pop", pytest.approx(0.2))
    assert DEFAULT_FAMILIES.dominant(np.zeros(50, np.float32), MSD_TAGS) is None


def test_ties_go_to_the_family_listed_first() -> None:
    probabilities = np.zeros(len(MSD_TAGS), np.float32)
    probabilities[MSD_TAGS.index("jazz")] = probabilities[MSD_TAGS.index("rock")] = 0.5
    assert DEFAULT_FAMILIES.dominant(probabilities, MSD_TAGS)[0] == "rock"  # type: ignore[index]


def test_a_model_with_other_tags_scores_only_the_members_it_has() -> None:
    fam = Families((("rock", ("rock", "punk")), ("jazz", ("jazz",))))
    scores = fam.scores(np.array([0.2, 0.7], np.float32), ("punk", "drums"))
    np.testing.assert_array_equal(scores, np.array([0.2, 0.0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        fam.scores(np.zeros(3, np.float32), ("punk", "drums"))


def test_to_toml_round_trips(tmp_path: Path) -> None:
    text = DEFAULT_FAMILIES.to_toml()
    assert families_from_toml(tomllib.loads(text)["families"]) == DEFAULT_FAMILIES
    path = tmp_path / "families.toml"
    path.write_text('[families]\nmetal = ["metal", "heavy metal", "hard rock"]\n')
    assert load_families(path).groups == (("metal", ("metal", "heavy metal", "hard rock")),)
    (tmp_path / "empty.toml").write_text("")
    assert load_families(tmp_path / "empty.toml") is DEFAULT_FAMILIES


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('hiphop = ["hip-hop"]', 'families.hiphop: \'hip-hop\' is not one of the model\'s tags '
                                 '(did you mean "Hip-Hop"?)'),
        ('rock = ["rokc"]', 'families.rock: \'rokc\' is not one of the model\'s tags '
                            '(did you mean "rock"?)'),
        ('a = ["rock"]\nb = ["punk", "rock"]', "families.b: 'rock' is already in family 'a'"),
        ("rock = []", "families.rock: an empty family"),
        ('rock = "rock"', "families.rock: expected a list of strings, got 'rock'"),
        ('"big rock" = ["rock"]', "families.big rock: a family name is letters"),
    ],
)  # fmt: skip
def test_bad_tables_name_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        families_from_toml(tomllib.loads(table))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_an_empty_table_is_refused() -> None:
    with pytest.raises(ConfigError, match="families: no family"):
        families_from_toml({})


@pytest.mark.skipif(
    not (SHARED_MUSIC / "gtzan").is_dir(),
    reason="../shared/music not found (real music for evaluation; absent on a fresh clone)",
)
@pytest.mark.parametrize(
    ("clip", "family"),
    [
        ("jazz.00001.flac", "jazz-blues-soul"),
        ("hiphop.00001.flac", "hip-hop"),
        ("classical.00000.flac", "ambient"),  # MSD-50 has no classical tag
        ("rock.00001.flac", "rock"),
    ],
)
def test_real_recordings_get_their_family(clip: str, family: str, tagger: object) -> None:
    from model.tagging import tag_file

    tags = tag_file(SHARED_MUSIC / "gtzan" / clip, tagger).tags  # type: ignore[arg-type]
    names = tuple(tags)
    dominant = DEFAULT_FAMILIES.dominant(np.array([tags[t] for t in names]), names)
    assert dominant is not None and dominant[0] == family, tags
