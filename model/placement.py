"""Where between overlapping windows one item ends and the next begins.

The tagger and the content classifier each say what a whole window holds (3 s,
a hop of 0.5 s apart), so a change of item shows as a run of windows that hold
some of both.  This module places the change inside that run, from what the
worker publishes per window (:class:`StreamWindows`): the content classifier's
``p_speech``/``p_music``, its ``change_at_s``/``change_strength``/``change_speech``
(:func:`model.content.spectral_change`) and the tags' probabilities.

Two readers share it:

- the as-run log (:mod:`monitor.asrun`) places every boundary of a recording;
- the worker's ``content_change`` event (:mod:`inference.content`) places its
  ``at_s`` the same way, from the windows it has published up to the one that
  confirmed the change.

:func:`place_content_change` places a change between music and talk (either
order); :func:`place` and :func:`snap_to_change` are its parts that the as-run
log also uses for changes of tag family.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import numpy as np

from model.content import change_score

__all__ = [
    "CHANGE_SNAP_LATER_TO_TALK_SECONDS",
    "CHANGE_SNAP_SECONDS",
    "RAMP_MARGIN_S",
    "RAMP_PROFILE_S",
    "SPEECH_SHARE_AT_FLIP",
    "StreamWindows",
    "best_split",
    "change_near",
    "place",
    "place_content_change",
    "snap_to_change",
    "speech_vs_music",
    "tag_ramp",
]

#: Share of a window that is speech where the content classifier's decision between
#: speech and music flips (``p_speech / (p_music + p_speech)`` = 0.5), for a window that
#: holds the end of one item and the start of the next: with the speech at the window's
#: ``end`` (music -> speech) and at its ``start`` (speech -> music).  The medians over the
#: music <-> talk changes of two tuning programmes (``python -m benchmarks.asrun_hour
#: --tuning --minutes 40 --seed 11`` and ``--minutes 30 --seed 3``: wesnoth music,
#: synthetic music and song, espeak-ng talk; 45 and 41 changes, interquartile ranges
#: 0.41-0.60 and 0.30-0.49), recorded with the classifier of ``model/content.py`` as
#: it is: they move when it does (0.44 and 0.26 before its SVM feature), so measure them
#: again after refitting it.  Places content boundaries (:func:`place_content_change`).
SPEECH_SHARE_AT_FLIP: Final = {"end": 0.49, "start": 0.39}
#: Seconds between a content boundary's first estimate and the windows that make the
#: two items' tag profiles, and the seconds of windows in each profile (:func:`tag_ramp`).
RAMP_MARGIN_S: Final = 1.0
RAMP_PROFILE_S: Final = 8.0
#: A music <-> talk boundary moves to the strongest change of sound the windows found
#: (``change_at_s``, :func:`model.content.spectral_change`: of the spectrum and the
#: speech probability) this close to its estimate.
CHANGE_SNAP_SECONDS: Final = 1.0
#: ... except that a change from music to talk may also move this far later: the
#: classifier's decision flips early when the song's end is quiet (a fade, a soft
#: ending), never late for that reason.  Chosen on the tuning programmes (``--tuning``,
#: seeds 11 and 5, cut and with 2-3 s fade-outs: changes to talk within one hop 85-96 %
#: cut and 62-85 % faded with 1 s, 92-100 % and 77-100 % with 1.5 s; 2 s lost 8 % on
#: seed 11 cut); held-out seed 3: 90 -> 84 % cut, 63 -> 90 % with 2 s fade-outs.
CHANGE_SNAP_LATER_TO_TALK_SECONDS: Final = 1.5


@dataclasses.dataclass
class StreamWindows:
    """One stream's published windows on one audio timeline, in audio order.

    Arrays of shape (W,): ``start_s``, ``end_s``, ``capture_time``, ``content``
    (object: "music", "speech", "silence"; a window recorded without content is
    music), ``p_music``, ``p_speech``, ``change_at_s``, ``change_strength``,
    ``change_speech`` (NaN where unknown); ``family_scores`` (W, F): the tag
    families' scores in the order of the as-run log's ``families.names``
    (:mod:`monitor.families`; F may be 0 where no families are needed);
    ``tag_probabilities`` (W, T): each window's tag probabilities, in the order of
    ``tags`` (T may be 0: no tags were kept); ``shed`` (W,): the windows of the stream
    the worker had shed by then, because it was behind (NaN where unknown; ``None``:
    not read).
    """

    stream: str
    start_s: np.ndarray
    end_s: np.ndarray
    capture_time: np.ndarray
    content: np.ndarray
    p_music: np.ndarray
    p_speech: np.ndarray
    change_at_s: np.ndarray
    change_strength: np.ndarray
    change_speech: np.ndarray
    family_scores: np.ndarray
    tag_probabilities: np.ndarray
    tags: tuple[str, ...]
    shed: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.start_s)

    def take(self, index: np.ndarray | slice) -> StreamWindows:
        return StreamWindows(
            self.stream,
            self.start_s[index],
            self.end_s[index],
            self.capture_time[index],
            self.content[index],
            self.p_music[index],
            self.p_speech[index],
            self.change_at_s[index],
            self.change_strength[index],
            self.change_speech[index],
            self.family_scores[index],
            self.tag_probabilities[index],
            self.tags,
            None if self.shed is None else self.shed[index],
        )

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.start_s + self.end_s)

    def change_score(self, first: int, last: int) -> np.ndarray:
        """How strongly the ``change_at_s`` of windows ``first .. last`` marks a change of
        item, weighed as the worker chose it (:func:`model.content.change_score`;
        ``change_speech`` counts 0 where the worker did not say)."""
        part = slice(first, last + 1)
        speech = np.nan_to_num(self.change_speech[part], nan=0.0)
        return change_score(self.change_strength[part], speech)

    def hop_seconds(self) -> float:
        """The hop between windows (the smallest step between starts)."""
        steps = np.diff(self.start_s)
        steps = steps[steps > 1e-6]
        return float(np.median(steps[steps <= np.median(steps) * 1.01])) if steps.size else 0.5

    def wall_time(self, audio_s: float) -> float:
        """Unix time of ``audio_s``: the nearest window end's capture time, moved by the audio."""
        j = int(np.argmin(np.abs(self.end_s - audio_s)))
        return float(self.capture_time[j] + (audio_s - self.end_s[j]))


def speech_vs_music(windows: StreamWindows) -> np.ndarray:
    """Per window, the content classifier's speech probability among speech and music.

    ``p_speech / (p_music + p_speech)``: 0.5 is where it decides between the two.
    A window recorded without probabilities counts by its ``content``.
    """
    total = windows.p_music + windows.p_speech
    with np.errstate(invalid="ignore", divide="ignore"):
        share = windows.p_speech / total
    fallback = (windows.content == "speech").astype(np.float64)
    return np.where(np.isfinite(share) & (total > 1e-9), share, fallback)


def best_split(evidence: np.ndarray, first: int, last: int) -> int:
    """The index k in (first, last] that maximises sum(evidence[first:k]) - sum(evidence[k:last+1]).

    ``evidence`` is positive where the left side's label fits better.
    """
    part = np.nan_to_num(evidence[first : last + 1].astype(np.float64))
    before = np.concatenate([[0.0], np.cumsum(part)])  # before[j] = sum(part[:j])
    total = before[-1]
    objective = 2 * before[1:-1] - total  # split after j=1..n-1 elements
    if objective.size == 0:
        return first + 1
    return first + 1 + int(np.argmax(objective))


def place(evidence: np.ndarray, first: int, last: int, centres: np.ndarray) -> tuple[int, float]:
    """Where ``evidence`` (> 0: like the left side) changes sign among windows ``first .. last``.

    Returns ``(k, audio_s)``: the split before window ``k`` with the largest sum of
    ``evidence`` before it and of ``-evidence`` after it, and the audio time where the
    evidence crosses zero between the centres of windows ``k - 1`` and ``k`` (linear
    interpolation; halfway when it does not cross).
    """
    k = best_split(evidence, first, last)
    before, after = float(evidence[k - 1]), float(evidence[k])
    share = before / (before - after) if before > 0 > after else 0.5
    return k, float(centres[k - 1] + share * (centres[k] - centres[k - 1]))


def place_content_change(
    windows: StreamWindows,
    speech_vs_music: np.ndarray,
    first: int,
    last: int,
    *,
    to_speech: bool,
    window_s: float,
    hop_s: float,
) -> tuple[int, float]:
    """Where windows ``first .. last`` change from music to talk (``to_speech``) or back.

    Returns ``(k, at_s)``: the new content's first window and the audio time of the
    change, between the centres of windows ``first`` and ``last``.  ``speech_vs_music``
    is :func:`speech_vs_music` of ``windows``; ``window_s`` and ``hop_s`` their length
    and hop.

    Two measurements of the same change, averaged:

    1. **Where the content decision flips.**  A window ``[e - W, e]`` over a change at
       ``T`` holds ``(e - T) / W`` of the new item.  The classifier calls it speech once
       a share ``s`` of it is speech (:data:`SPEECH_SHARE_AT_FLIP`: about 0.49 when the
       speech is at the window's end, 0.39 when it is at its start), so from music to
       speech the flip's window ends at ``T + s * W`` and its centre lies ``(0.5 - s) * W``
       before ``T``: the change is that centre moved ``(0.5 - s) * W`` later.  From
       speech to music the flip's window holds ``1 - (e - T) / W`` of speech and its
       centre lies ``(0.5 - s) * W`` after ``T``: moved as much earlier.
    2. **Where the tags move** (:func:`tag_ramp`).

    Both are within about a hop of the change on their own in half to three quarters
    of the changes of the tuning programme (``python -m benchmarks.asrun_hour
    --tuning``); their errors are partly independent and their mean is closer.
    That mean then moves to the strongest change of sound the windows report within
    :data:`CHANGE_SNAP_SECONDS` of it (:func:`snap_to_change`), which is finer than
    windows a hop apart can say; a change to talk looks up to
    :data:`CHANGE_SNAP_LATER_TO_TALK_SECONDS` later, since a quiet song end makes the
    flip early.
    """
    like_before = 0.5 - speech_vs_music if to_speech else speech_vs_music - 0.5
    k, flip_s = place(like_before, first, last, windows.centres)
    if to_speech:
        placed = flip_s + (0.5 - SPEECH_SHARE_AT_FLIP["end"]) * window_s
    else:
        placed = flip_s - (0.5 - SPEECH_SHARE_AT_FLIP["start"]) * window_s
    moved = tag_ramp(windows, placed, first, last, window_s, hop_s)
    if moved is not None:
        placed = 0.5 * (placed + moved)
    later = CHANGE_SNAP_LATER_TO_TALK_SECONDS if to_speech else CHANGE_SNAP_SECONDS
    placed = snap_to_change(windows, placed, first, last, later_s=later)
    lowest, highest = windows.centres[first], windows.centres[last]
    return k, float(min(max(placed, lowest), highest))


def snap_to_change(
    windows: StreamWindows,
    near_s: float,
    first: int,
    last: int,
    *,
    later_s: float = CHANGE_SNAP_SECONDS,
) -> float:
    """The strongest ``change_at_s`` of windows ``first .. last`` within reach of ``near_s``.

    Each window reports where in its middle second the sound changes most
    (:func:`model.content.spectral_change`: the mean log-mel spectrum of the second
    before against the second after, and the probability of talk likewise)
    and how much; at a splice from music to talk the strongest of those
    (:meth:`StreamWindows.change_score`) lies at the splice.  Only changes from
    :data:`CHANGE_SNAP_SECONDS` before ``near_s`` to ``later_s`` after it count, so a
    change inside the song or the talk further away is never taken.  ``near_s``
    itself when no window says (a recording from a worker without ``change_at_s``).
    """
    return change_near(windows, near_s, first, last, before_s=CHANGE_SNAP_SECONDS, after_s=later_s)[
        0
    ]


def change_near(
    windows: StreamWindows, at_s: float, first: int, last: int, *, before_s: float, after_s: float
) -> tuple[float, float]:
    """``(change_at_s, change_score)`` of the strongest change windows ``first .. last``
    report from ``before_s`` before ``at_s`` to ``after_s`` after it; ``(at_s, 0.0)`` if
    none.  Strongest by :meth:`StreamWindows.change_score`: the change of spectrum and of
    speech probability, as the worker weighed them to choose each window's point."""
    at = windows.change_at_s[first : last + 1]
    score = windows.change_score(first, last)
    offset = at - at_s
    near = np.isfinite(at) & np.isfinite(score) & (offset >= -before_s) & (offset <= after_s)
    if not near.any():
        return at_s, 0.0
    k = int(np.argmax(np.where(near, score, -np.inf)))
    return float(at[k]), float(score[k])


def tag_ramp(
    windows: StreamWindows, near_s: float, first: int, last: int, window_s: float, hop_s: float
) -> float | None:
    """Where the windows' tags move from one item's profile to the next one's, near ``near_s``.

    The tagging model pools over its window, so a window ``[e - W, e]`` over a change
    at ``T`` has scores (logits) about ``(e - T) / W`` of the way from the first item's
    to the second's.  Each window's logits are projected on the line between the two
    profiles (medians over the windows of ``first .. last`` that end at least
    :data:`RAMP_MARGIN_S` before ``near_s``, or begin as far after it, and lie within
    :data:`RAMP_PROFILE_S` of that), and ``T`` is the change whose ramp
    ``clip((e - T) / W, 0, 1)`` fits those projections best (least squares, 10 ms
    steps within :data:`RAMP_MARGIN_S` + one hop of ``near_s``).

    Returns None when the windows hold no tags, either side has fewer than two
    windows for its profile, or the profiles are the same.
    """
    if not windows.tags:
        return None
    # Only the windows near the change: the profiles' and the ramp's.
    span_s = RAMP_MARGIN_S + RAMP_PROFILE_S + window_s
    lo = max(first, int(np.searchsorted(windows.start_s, near_s - span_s - window_s)))
    hi = min(last + 1, int(np.searchsorted(windows.start_s, near_s + span_s)))
    start, end = windows.start_s[lo:hi], windows.end_s[lo:hi]
    p = np.clip(windows.tag_probabilities[lo:hi].astype(np.float64), 1e-4, 1 - 1e-4)
    logits = np.log(p / (1 - p))
    before = (end <= near_s - RAMP_MARGIN_S) & (end > near_s - RAMP_MARGIN_S - RAMP_PROFILE_S)
    after = (start >= near_s + RAMP_MARGIN_S) & (start < near_s + RAMP_MARGIN_S + RAMP_PROFILE_S)
    if before.sum() < 2 or after.sum() < 2:
        return None
    origin = np.median(logits[before], axis=0)
    direction = np.median(logits[after], axis=0) - origin
    length = float(direction @ direction)
    if not length > 1e-6:
        return None
    reach = window_s + RAMP_MARGIN_S
    used = (end > near_s - reach) & (start < near_s + reach)
    position = (logits[used] - origin) @ direction / length
    candidates = np.arange(near_s - RAMP_MARGIN_S - hop_s, near_s + RAMP_MARGIN_S + hop_s, 0.01)
    ramps = np.clip((end[used][None, :] - candidates[:, None]) / window_s, 0.0, 1.0)
    cost = ((position[None, :] - ramps) ** 2).sum(axis=1)
    return float(candidates[int(np.argmin(cost))])
