"""Tag families: the 50 MSD tags grouped into the genres and formats a station thinks in.

A model says ``rock 0.41, alternative rock 0.38, hard rock 0.22, indie 0.20`` for one
track; a station says "rock".  A :class:`Families` maps tags to families so that
rules (:mod:`monitor.alerts`), the report and the dashboards can speak of one
family instead of four neighbouring tags::

    >>> fam = DEFAULT_FAMILIES
    >>> fam.family_of("heavy metal")
    'metal'
    >>> scores = fam.scores(update.smoothed, update.tags)     # doctest: +SKIP
    >>> fam.dominant(update.smoothed, update.tags)            # doctest: +SKIP
    ('rock', 0.41)

**A family's score is the largest probability among its tags** (``max``), for
three reasons:

- The 50 outputs are independent sigmoids over strongly correlated, partly
  synonymous tags (``rock``, ``alternative rock``, ``classic rock`` all rise
  together on one rock track).  A sum counts the same evidence several times
  and can exceed 1; noisy-OR (``1 - prod(1 - p)``) assumes the independence
  these tags lack and inflates in the same way.
- Both of those grow with the number of tags in a family, so the nine-tag rock
  family would out-vote the two-tag metal family on a metal track.  ``max`` does
  not depend on family size, so the dominant family is fair between families.
- A family score stays in [0, 1] on the same scale as a tag probability, so a
  threshold means the same whether a rule names ``tag = "metal"`` or
  ``family = "metal"``.

**The default grouping** (:data:`DEFAULT_GROUPS`) puts each tag that names a
genre or a radio format in exactly one family.  Tags that describe music of
every family belong to none and never decide the dominant family: eras (``60s``
… ``00s``, ``oldies``), moods and qualities (``beautiful``, ``Mellow``,
``party``, ``sexy``, ``catchy``, ``sad``, ``happy``), voices (``female
vocalists``, ``female vocalist``, ``male vocalists``) and ``guitar`` and
``experimental`` (an instrument and a descriptor found across genres).  The
MSD top-50 has no ``classical`` tag: classical music scores mostly on
``instrumental``, ``ambient`` and ``beautiful``, so it lands in ``ambient``.

**Configuring**: a TOML ``[families]`` table, one family per key, replaces the
default grouping whole (nothing is merged, so what the file says is what
applies)::

    [families]
    rock = ["rock", "alternative rock", "classic rock", "hard rock"]
    metal = ["metal", "heavy metal"]

A tag may belong to one family at most; names must be the model's tags as it
spells them (``Hip-Hop``, ``Mellow``).  Mistakes fail at start-up with one line
naming the key (:class:`config.ConfigError`, exit status 2).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from config.schema import ConfigError, coerce_setting, read_toml
from model.contract import MSD_TAGS

__all__ = [
    "DEFAULT_FAMILIES",
    "DEFAULT_GROUPS",
    "Families",
    "families_from_toml",
    "load_families",
    "unknown_tag_error",
]

#: The default families, in display order (dominant-family ties go to the earlier one).
DEFAULT_GROUPS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("rock", (
        "rock", "alternative", "alternative rock", "indie", "indie rock", "classic rock",
        "hard rock", "Progressive rock", "punk",
    )),
    ("metal", ("metal", "heavy metal")),
    ("pop", ("pop", "indie pop")),
    ("electronic", ("electronic", "electronica", "electro", "dance", "House")),
    ("hip-hop", ("Hip-Hop", "rnb")),
    ("jazz-blues-soul", ("jazz", "blues", "soul", "funk")),
    ("folk-country", ("folk", "country", "acoustic")),
    ("ambient", ("ambient", "chillout", "chill", "easy listening", "instrumental")),
)  # fmt: skip

#: A family name: a letter or digit, then letters, digits, ``-`` or ``_`` (metric-label safe).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class Families:
    """An ordered grouping of tags into families; each tag in at most one family.

    Parameters
    ----------
    groups : sequence of (name, tags)
        Family names with their member tags, in display order.

    Raises
    ------
    ValueError
        An empty family, a repeated family name or a tag in two families
        (:func:`families_from_toml` reports these as :class:`config.ConfigError`).
    """

    groups: tuple[tuple[str, tuple[str, ...]], ...]
    _index_cache: dict[tuple[str, ...], list[np.ndarray]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        groups = tuple((str(name), tuple(tags)) for name, tags in self.groups)
        object.__setattr__(self, "groups", groups)
        owner: dict[str, str] = {}
        for name, tags in groups:
            if not tags:
                raise ValueError(f"family {name!r} has no tags")
            for tag in tags:
                if tag in owner:
                    raise ValueError(f"tag {tag!r} is in both {owner[tag]!r} and {name!r}")
                owner[tag] = name
        if len({name for name, _ in groups}) != len(groups):
            raise ValueError("family names must be unique")

    @property
    def names(self) -> tuple[str, ...]:
        """Family names in display order."""
        return tuple(name for name, _ in self.groups)

    def members(self, name: str) -> tuple[str, ...]:
        """The tags of family ``name`` (``KeyError`` if there is none)."""
        for family, tags in self.groups:
            if family == name:
                return tags
        raise KeyError(name)

    def family_of(self, tag: str) -> str | None:
        """The family ``tag`` belongs to, or ``None`` (eras, moods, voices...)."""
        for family, tags in self.groups:
            if tag in tags:
                return family
        return None

    def ungrouped(self, tags: Iterable[str] = MSD_TAGS) -> tuple[str, ...]:
        """The tags of ``tags`` that belong to no family, in their order."""
        grouped = {tag for _, members in self.groups for tag in members}
        return tuple(tag for tag in tags if tag not in grouped)

    def _indices(self, tags: Sequence[str]) -> list[np.ndarray]:
        key = tuple(tags)
        cached = self._index_cache.get(key)
        if cached is None:
            position = {tag: i for i, tag in enumerate(key)}
            cached = [
                np.array([position[t] for t in members if t in position], dtype=np.intp)
                for _, members in self.groups
            ]
            self._index_cache[key] = cached
        return cached

    def scores(self, probabilities: np.ndarray, tags: Sequence[str]) -> np.ndarray:
        """Each family's score: the largest probability among its tags.

        Parameters
        ----------
        probabilities : np.ndarray [shape=(N,)], values in [0, 1]
            One window's tag probabilities (raw or smoothed).
        tags : sequence of str [len N]
            Tag names in the order of ``probabilities`` (a model with other tags
            than the MSD 50 scores only the members it has; a family with none
            of them scores 0).

        Returns
        -------
        np.ndarray [shape=(len(names),), dtype=float32]
            In the order of :attr:`names`.
        """
        values = np.asarray(probabilities, dtype=np.float32)
        if values.shape != (len(tags),):
            raise ValueError(f"probabilities shape {values.shape} must be ({len(tags)},)")
        out = np.zeros(len(self.groups), dtype=np.float32)
        for i, index in enumerate(self._indices(tags)):
            if index.size:
                out[i] = values[index].max()
        return out

    def score_map(self, probabilities: np.ndarray, tags: Sequence[str]) -> dict[str, float]:
        """:meth:`scores` as ``{family: score}``."""
        return dict(zip(self.names, self.scores(probabilities, tags).tolist(), strict=True))

    def dominant(
        self, probabilities: np.ndarray, tags: Sequence[str], *, min_score: float = 0.0
    ) -> tuple[str, float] | None:
        """The family with the highest score and that score, or ``None`` below ``min_score``.

        Ties go to the family listed first.
        """
        scores = self.scores(probabilities, tags)
        best = int(np.argmax(scores))
        score = float(scores[best])
        if score < min_score or score <= 0.0:
            return None
        return self.names[best], score

    def to_toml(self) -> str:
        """The grouping as a ``[families]`` TOML table (to copy and edit)."""
        lines = ["[families]"]
        for name, tags in self.groups:
            quoted = ", ".join(f'"{tag}"' for tag in tags)
            key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'
            lines.append(f"{key} = [{quoted}]")
        return "\n".join(lines) + "\n"


#: The built-in grouping (see the module doc for what belongs to no family and why).
DEFAULT_FAMILIES: Final = Families(DEFAULT_GROUPS)


def unknown_tag_error(key: str, tag: str, known: Sequence[str]) -> ConfigError:
    """A :class:`config.ConfigError` for a tag name the model lacks, with the closest spelling."""
    by_case = {t.lower(): t for t in known}
    hint = by_case.get(tag.lower())
    if hint is None:
        close = difflib.get_close_matches(tag, known, n=1)
        hint = close[0] if close else None
    suggestion = f' (did you mean "{hint}"?)' if hint else "; the tags are listed in docs/ALERTS.md"
    return ConfigError(f"{key}: {tag!r} is not one of the model's tags{suggestion}")


def families_from_toml(
    data: Mapping[str, Any], *, tags: Sequence[str] = MSD_TAGS, prefix: str = "families."
) -> Families:
    """Build :class:`Families` from a parsed ``[families]`` table.

    Parameters
    ----------
    data : mapping {family name: list of tag names}
        The table's contents, in file order.
    tags : sequence of str
        The model's tags; every member must be one of them.
    prefix : str
        Prepended to keys in error messages.

    Raises
    ------
    config.ConfigError
        An empty table or family, a bad family name, a tag that is not one of
        ``tags`` (with the closest spelling) or a tag in two families.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix[:-1]}: expected a [section], got {data!r}")
    if not data:
        raise ConfigError(f"{prefix[:-1]}: no family; name at least one, or drop the table")
    groups: list[tuple[str, tuple[str, ...]]] = []
    owner: dict[str, str] = {}
    for name, raw in data.items():
        key = f"{prefix}{name}"
        if not _NAME.match(name):
            raise ConfigError(
                f"{key}: a family name is letters, digits, '-' or '_' (at most 64), "
                "starting with a letter or digit"
            )
        members = coerce_setting(key, raw, tuple[str, ...], wrap_string=False)
        if not members:
            raise ConfigError(f"{key}: an empty family; list at least one tag")
        for tag in members:
            if tag not in tags:
                raise unknown_tag_error(key, tag, tags)
            if tag in owner:
                raise ConfigError(
                    f"{key}: {tag!r} is already in family {owner[tag]!r}; "
                    "a tag belongs to one family at most"
                )
            owner[tag] = name
        groups.append((name, members))
    return Families(tuple(groups))


def load_families(path: str | os.PathLike[str], *, tags: Sequence[str] = MSD_TAGS) -> Families:
    """Read the ``[families]`` table of a TOML file (:func:`families_from_toml`).

    A file without that table gives :data:`DEFAULT_FAMILIES`.
    """
    data = read_toml(path)
    if "families" not in data:
        return DEFAULT_FAMILIES
    return families_from_toml(data["families"], tags=tags)
