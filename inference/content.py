"""What each stream's windows hold, and the events that follow from it, for the worker.

The worker hands this module every accepted audio block and every window it
publishes; :class:`ContentTracker` keeps, per stream (:class:`ContentStream`):

* the last :data:`RING_SECONDS` of audio received (an outage that resets the
  stream takes no room) at the classifier's 16 kHz, on the
  same audio timeline as the worker's windows (``start_s``/``end_s``), so each
  published window is classified from exactly its own samples
  (:class:`model.content.ContentClassifier`: ``content``,
  ``content_probabilities``, ``level_dbfs`` on the tag update);
* the **silence timer**: the level of every :data:`LEVEL_BLOCK_SECONDS` of
  audio is compared with ``silence_dbfs``; ``silence_seconds`` of quiet in a
  row is a ``silence_start`` event (``at_s`` = where the quiet began +
  ``silence_seconds``), the first block at or above the threshold afterwards a
  ``silence_end`` (``at_s`` = where the audio returned).  Audio the worker
  filled in for a sequence gap is neither quiet nor loud: an outage is the
  streamer's ``source_down``, not dead air;
* the **content hysteresis**: ``content_change`` (music <-> speech) once the
  windows have said the other class for ``change_seconds`` in a row (silent
  windows are skipped); ``at_s`` is where the content changed, placed among the
  windows published up to then exactly as the as-run log places the boundary
  (:func:`model.placement.place_content_change`: where the classifier's decision
  flips, where the tags move, the strongest change of sound near both), so a
  live event and the report agree;
* the mapping from a streamer's block timeline to the worker's audio
  timeline, for the source events a streamer sends (``now_playing``,
  ``source_down``, ``source_up``), which the worker republishes.

**Per-station silence settings.** ``[content] stations`` names a station file
(:mod:`streamer.stations`, the one ``python -m streamer --stations`` reads);
each station's ``silence_dbfs`` and ``silence_seconds`` (defaulting to
``[content]``'s) then apply to the stream with its id: the silence timer, the
``threshold_dbfs`` of its ``silence_start`` and the ``silence`` content of its
updates.  The file is read and checked when the worker starts, so a worker that
restarts keeps them and nothing extra travels on the wire.

The classifier costs about 12 ms per 3 s window (docs/CONTENT.md).  It runs in
one thread of its own while the model computes the same batch
(:meth:`ContentTracker.submit` before the model call, :meth:`ContentJob.results`
after it): both ONNX Runtime and TensorFlow release the GIL, so on a machine
with a core to spare the classifier adds nothing to an update's latency.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import math
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.windows import AcceptResult, PendingWindow, StreamState
from model.audio import Resampler, finite_samples, to_mono_float32
from model.placement import (
    RAMP_MARGIN_S,
    RAMP_PROFILE_S,
    StreamWindows,
    place_content_change,
    speech_vs_music,
)
from protocol import AudioFrame, Event, TagUpdate

if TYPE_CHECKING:
    from config import Config
    from inference.backends import DueWindow
    from model.content import ContentClassifier, ContentResult

__all__ = [
    "LEVEL_BLOCK_SECONDS",
    "RING_SECONDS",
    "ContentJob",
    "ContentSettings",
    "ContentStream",
    "ContentTracker",
]

logger = logging.getLogger(__name__)

#: Seconds of audio per level measurement of the silence timer.
LEVEL_BLOCK_SECONDS = 0.1
#: Seconds of audio kept per stream beyond the window (windows may wait for the model).
RING_SECONDS = 30.0
#: The classifier's sample rate (model.content.SAMPLE_RATE; not imported, to keep ONNX away).
_RATE = 16000
_RING_SAMPLES = round(RING_SECONDS * _RATE)
#: Least seconds between two log lines about failing classifications.
_LOG_INTERVAL_S = 5.0
#: Seconds of published windows kept before the first window of a new content, beyond
#: one window, to place its ``content_change``: the tag profile of the content before
#: it (:func:`model.placement.tag_ramp`) reads this far back.
_PLACE_BACK_S = RAMP_MARGIN_S + RAMP_PROFILE_S


@dataclass(frozen=True)
class ContentSettings:
    """The ``[content]`` settings the tracker works with.

    Attributes
    ----------
    enabled : bool
        False: no content on updates and no silence or content events (source
        events still pass).
    silence_dbfs : float in (-120, 0)
        Level below which audio is silence.
    silence_seconds : float > 0
        Quiet this long in a row is dead air (``silence_start``).
    change_seconds : float > 0
        A new content must hold this long before ``content_change``.
    """

    enabled: bool = True
    silence_dbfs: float = -50.0
    silence_seconds: float = 10.0
    change_seconds: float = 4.0

    @classmethod
    def from_config(cls, config: Config) -> ContentSettings:
        section = config.content
        return cls(
            enabled=section.enabled,
            silence_dbfs=section.silence_dbfs,
            silence_seconds=section.silence_seconds,
            change_seconds=section.change_seconds,
        )


def station_settings(config: Config, settings: ContentSettings) -> dict[str, ContentSettings]:
    """Each station's settings, by stream id, from the ``[content] stations`` file ({} if none).

    Raises
    ------
    config.ConfigError
        The station file is missing or invalid (one line naming the station and key).
    """
    path = config.content.stations
    if not path:
        return {}
    from streamer.stations import load_stations

    return {
        station.id: dataclasses.replace(
            settings, silence_dbfs=station.silence_dbfs, silence_seconds=station.silence_seconds
        )
        for station in load_stations(path, config)
    }


@dataclass(frozen=True, eq=False)
class _Chunk:
    start_s: float
    samples: np.ndarray  # 16 kHz mono float32
    filled: bool  # silence the worker put in for a sequence gap

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.samples) / _RATE


class ContentStream:
    """One stream's audio ring, silence timer and content hysteresis.

    Parameters
    ----------
    stream : str
    settings : ContentSettings
    keep_audio : bool
        False: follow the audio clock only (for source events), keeping no audio.
    """

    def __init__(self, stream: str, settings: ContentSettings, *, keep_audio: bool = True) -> None:
        self.stream = stream
        self.settings = settings
        self.keep_audio = keep_audio
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._held = 0  # 16 kHz samples in the chunks
        self._resampler: Resampler | None = None
        self._rate: int | None = None
        self._expected_seq: int | None = None
        self._block_s = 0.0
        self._origin_s = 0.0  # audio time of the segment's first sample
        self._input_samples = 0  # samples received (input rate) in the segment
        self._output_samples = 0  # 16 kHz samples made in the segment
        #: (seq, audio time of its first sample, duration) of the last block: maps a
        #: streamer's block timeline to this one.
        self._anchor: tuple[int, float, float] | None = None
        # Silence timer.
        self._scanned_s = 0.0
        self._quiet_since: float | None = None
        self._quiet_level = -math.inf
        self.silent = False
        # Content hysteresis.
        self.content: str | None = None
        self._candidate: str | None = None
        self._candidate_since = 0.0  # audio time (middle of its first window)
        self._candidate_first_end = 0.0
        #: The windows published since the last silent one or hole in the timeline,
        #: as far back as placing a content_change reads (_PLACE_BACK_S).
        self._recent: collections.deque[TagUpdate] = collections.deque()

    # -- input ------------------------------------------------------------------------

    def accept(self, frame: AudioFrame, result: str) -> None:
        """Follow what :meth:`inference.windows.StreamState.accept` did with ``frame``."""
        if result in (AcceptResult.DUPLICATE, AcceptResult.ENDED, AcceptResult.RESTARTED):
            return
        if result == AcceptResult.FORMAT_RESET:
            self._new_segment(gap_s=0.0)
        elif result in (AcceptResult.GAP_FILLED, AcceptResult.GAP_RESET):
            assert self._expected_seq is not None
            missing_s = (frame.seq - self._expected_seq) * self._block_s
            if result == AcceptResult.GAP_FILLED:
                assert self._rate is not None
                silence = np.zeros(round(missing_s * self._rate), dtype=np.float32)
                self._add(silence, filled=True)
            else:
                self._new_segment(gap_s=missing_s)
        self._expected_seq = frame.seq + 1
        self._rate = frame.sample_rate
        self._block_s = frame.duration_s
        self._anchor = (frame.seq, self._segment_end_s(), frame.duration_s)
        samples, _ = finite_samples(to_mono_float32(frame))
        self._add(samples, filled=False)

    def audio_time(self, block_at_s: float) -> float:
        """A streamer's block-timeline position (``seq`` x block length) on this timeline."""
        if self._anchor is None:
            return max(block_at_s, 0.0)
        seq, audio_s, block_s = self._anchor
        return max(audio_s + (block_at_s - seq * block_s), 0.0)

    def _segment_end_s(self) -> float:
        if self._rate is None:
            return self._origin_s
        return self._origin_s + self._input_samples / self._rate

    def _new_segment(self, *, gap_s: float) -> None:
        self._origin_s = self._segment_end_s() + gap_s
        self._input_samples = 0
        self._output_samples = 0
        self._resampler = None

    def _add(self, samples: np.ndarray, *, filled: bool) -> None:
        rate = self._rate
        if rate is None or not len(samples):
            return
        self._input_samples += len(samples)
        if not self.keep_audio:
            return
        if rate != _RATE:
            if self._resampler is None:
                self._resampler = Resampler(rate, _RATE)
            samples = self._resampler.push(samples)
        if not len(samples):
            return
        start_s = self._origin_s + self._output_samples / _RATE
        self._output_samples += len(samples)
        self._chunks.append(_Chunk(start_s, np.array(samples, dtype=np.float32), filled))
        self._held += len(samples)
        # Trimmed by the audio it holds, not by the timeline: an outage jumps the clock,
        # and the audio before it may still wait for the classifier.
        while self._held - len(self._chunks[0].samples) >= _RING_SAMPLES:
            self._held -= len(self._chunks.popleft().samples)

    # -- windows ----------------------------------------------------------------------

    def samples(self, start_s: float, end_s: float) -> np.ndarray | None:
        """The 16 kHz audio of ``[start_s, end_s)``; ``None`` when any of it is gone."""
        count = round((end_s - start_s) * _RATE)
        if count <= 0 or not self._chunks or self._chunks[0].start_s > start_s + 1.0 / _RATE:
            return None
        out = np.zeros(count, dtype=np.float32)
        covered = 0
        for chunk in reversed(self._chunks):  # the newest first: windows are recent audio
            if chunk.end_s <= start_s:
                break
            if chunk.start_s >= end_s:
                continue
            first = max(0, round((start_s - chunk.start_s) * _RATE))
            at = max(0, round((chunk.start_s - start_s) * _RATE))
            take = min(len(chunk.samples) - first, count - at)
            if take > 0:
                out[at : at + take] = chunk.samples[first : first + take]
                covered += take
        return out if covered >= count - 2 else None

    def _levels(self, until_s: float) -> list[tuple[float, float | None]]:
        """(start, dBFS or None where filled or gone) of each level block up to ``until_s``."""
        blocks: list[tuple[float, float | None]] = []
        if self._chunks and self._scanned_s < self._chunks[0].start_s:
            self._scanned_s = self._chunks[0].start_s  # older audio is gone (or never came)
        while self._scanned_s + LEVEL_BLOCK_SECONDS <= until_s + 1e-9:
            start = self._scanned_s
            end = start + LEVEL_BLOCK_SECONDS
            self._scanned_s = end
            if self._filled(start, end):
                blocks.append((start, None))
                continue
            audio = self.samples(start, end)
            blocks.append((start, None if audio is None else _level_dbfs(audio)))
        return blocks

    def _filled(self, start_s: float, end_s: float) -> bool:
        """Whether any audio of ``[start_s, end_s)`` was filled in for a sequence gap."""
        for chunk in reversed(self._chunks):
            if chunk.end_s <= start_s:
                return False
            if chunk.filled and chunk.start_s < end_s:
                return True
        return False

    def events_until(self, end_s: float, *, now: float) -> list[Event]:
        """The silence events of the audio up to ``end_s`` (a published window's end)."""
        events = []
        threshold = self.settings.silence_dbfs
        for start, level in self._levels(end_s):
            if level is None:  # a gap: no evidence either way; a quiet run starts afresh
                if not self.silent:
                    self._quiet_since = None
                continue
            if level < threshold:
                if self._quiet_since is None:
                    self._quiet_since = start
                    self._quiet_level = level
                self._quiet_level = max(self._quiet_level, level)
                reached = start + LEVEL_BLOCK_SECONDS - self._quiet_since
                if not self.silent and reached >= self.settings.silence_seconds - 1e-9:
                    self.silent = True
                    events.append(
                        Event(
                            self.stream,
                            "silence_start",
                            time=now,
                            at_s=round(self._quiet_since + self.settings.silence_seconds, 3),
                            fields={
                                "silence_since_s": round(self._quiet_since, 3),
                                "level_dbfs": round(self._quiet_level, 2),
                                "threshold_dbfs": threshold,
                            },
                        )
                    )
            else:
                if self.silent and self._quiet_since is not None:
                    events.append(
                        Event(
                            self.stream,
                            "silence_end",
                            time=now,
                            at_s=round(start, 3),
                            fields={
                                "duration_s": round(start - self._quiet_since, 3),
                                "level_dbfs": round(level, 2),
                            },
                        )
                    )
                self.silent = False
                self._quiet_since = None
        return events

    def content_event(self, update: TagUpdate, *, now: float) -> Event | None:
        """Follow the windows' content; a ``content_change`` once a new one has held.

        ``update`` is the window's update with its content fields.
        """
        self._remember(update)
        content = update.content
        if content not in ("music", "speech"):
            return None  # silent windows neither confirm nor break a run
        if content == self.content:
            self._candidate = None
            return None
        if content != self._candidate:
            self._candidate = content
            self._candidate_since = 0.5 * (update.start_s + update.end_s)
            self._candidate_first_end = update.end_s
        if update.end_s - self._candidate_first_end + 1e-9 < self.settings.change_seconds:
            return None
        previous, self.content, self._candidate = self.content, content, None
        if previous is None:  # the stream's first content: nothing changed
            return None
        return Event(
            self.stream,
            "content_change",
            time=now,
            at_s=round(self._change_at(to_speech=content == "speech"), 3),
            fields={"content": content, "previous": previous},
        )

    def _remember(self, update: TagUpdate) -> None:
        """Keep ``update``'s window for placing a change; forget what no change reaches."""
        recent = self._recent
        if update.content == "silence" or (recent and update.start_s > recent[-1].end_s):
            recent.clear()  # a silence or an outage: the as-run log's stretches end there too
        if update.content == "silence":
            return
        recent.append(update)
        window_s = update.end_s - update.start_s
        reach_s = self.settings.change_seconds + 2 * window_s + _PLACE_BACK_S
        while recent[0].end_s < update.end_s - reach_s:
            recent.popleft()

    def _change_at(self, *, to_speech: bool) -> float:
        """Where the content just confirmed began (audio time).

        Placed among the kept windows as the as-run log places it
        (:func:`model.placement.place_content_change`).  When none of them holds the
        content before (the new one follows a silence or an outage), the middle of the
        new content's first window.  The windows before the new content's first are
        then forgotten: the next change is placed among the new content's windows and
        those after them, as the as-run log places it between two runs.
        """
        first_end = self._candidate_first_end
        reach_s = _PLACE_BACK_S + (first_end - self._candidate_since) * 2  # + one window
        kept = [w for w in self._recent if w.end_s >= first_end - reach_s]
        before = sum(1 for w in kept if w.end_s < first_end)
        older = len(self._recent) - len(kept)
        if not before or before == len(kept):
            at_s, first = self._candidate_since, older + before
        else:
            windows = _stream_windows(self.stream, kept)
            k, at_s = place_content_change(
                windows,
                speech_vs_music(windows),
                0,
                len(kept) - 1,
                to_speech=to_speech,
                window_s=float(np.median(windows.end_s - windows.start_s)),
                hop_s=windows.hop_seconds(),
            )
            first = older + k
        for _ in range(first):
            self._recent.popleft()
        return at_s


def _stream_windows(stream: str, kept: Sequence[TagUpdate]) -> StreamWindows:
    """``kept`` updates as the arrays :mod:`model.placement` reads (no tag families)."""

    def column(values: Sequence[float | None]) -> np.ndarray:
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    shares = [u.content_probabilities or {} for u in kept]
    same_tags = all(u.tags == kept[0].tags for u in kept)
    return StreamWindows(
        stream,
        column([u.start_s for u in kept]),
        column([u.end_s for u in kept]),
        column([u.capture_time for u in kept]),
        np.array([u.content or "music" for u in kept], dtype=object),
        column([p.get("music") for p in shares]),
        column([p.get("speech") for p in shares]),
        column([u.change_at_s for u in kept]),
        column([u.change_strength for u in kept]),
        column([u.change_speech for u in kept]),
        np.zeros((len(kept), 0)),
        np.stack([u.probabilities for u in kept]) if same_tags else np.zeros((len(kept), 0)),
        kept[0].tags if same_tags else (),
    )


def _level_dbfs(samples: np.ndarray) -> float:
    from model.content import level_dbfs

    return level_dbfs(samples)


class ContentJob:
    """The classifications of one batch's windows, computing in the tracker's thread."""

    def __init__(self, future: concurrent.futures.Future[list[Any]] | None, size: int) -> None:
        self._future = future
        self._size = size

    def results(self) -> list[ContentResult | None]:
        """One result per window of the batch (``None`` where it could not be classified)."""
        if self._future is None:
            return [None] * self._size
        try:
            return self._future.result()
        except Exception as exc:  # a classifier failure must not lose the tag updates
            logger.error("content classification failed error=%r", exc)
            return [None] * self._size


class ContentTracker:
    """All streams' :class:`ContentStream`, the classifier and its thread.

    Parameters
    ----------
    settings : ContentSettings
    classifier : model.content.ContentClassifier or None
        Loaded by :meth:`from_config`; ``None`` when content is disabled.
    stations : mapping {stream id: ContentSettings}
        Streams whose settings differ (:func:`station_settings`); the others get ``settings``.

    Notes
    -----
    Each :class:`inference.windows.StreamState` gets its own :class:`ContentStream`
    (held weakly by the state, so it goes when the worker forgets the stream and
    its last window is published).  Call :meth:`close` to stop the thread.
    """

    def __init__(
        self,
        settings: ContentSettings,
        classifier: ContentClassifier | None = None,
        *,
        stations: Mapping[str, ContentSettings] | None = None,
    ) -> None:
        self.settings = settings
        self.stations = dict(stations or {})
        self.classifier = classifier if settings.enabled else None
        #: One classifier per silence threshold in use, all sharing the first one's models.
        self._classifiers: dict[float, ContentClassifier] = {}
        if self.classifier is not None:
            self._classifiers[self.classifier.silence_dbfs] = self.classifier
            for station in self.stations.values():
                self._classifier_for(station.silence_dbfs)
        self._streams: weakref.WeakKeyDictionary[StreamState, ContentStream] = (
            weakref.WeakKeyDictionary()
        )
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="content")
            if self.classifier is not None
            else None
        )
        #: Windows classified, and windows whose audio was gone.
        self.classified = 0
        self.unclassified = 0

    @classmethod
    def from_config(cls, config: Config) -> ContentTracker:
        """A tracker with the ``[content]`` settings; loads the classifier when enabled.

        Raises
        ------
        model.content.ContentError
            ONNX Runtime or the VAD model is missing (exit status 3).
        """
        settings = ContentSettings.from_config(config)
        stations = station_settings(config, settings)
        classifier = None
        if settings.enabled:
            from model.content import load_content_classifier

            classifier = load_content_classifier(
                silence_dbfs=settings.silence_dbfs,
                network=config.content.network,
                cache_dir=config.model.cache_dir,
            )
        if stations:
            logger.info("per-station content settings stations=%d", len(stations))
        return cls(settings, classifier, stations=stations)

    def settings_for(self, stream: str) -> ContentSettings:
        """The settings of ``stream``: its station's, else the ``[content]`` ones."""
        return self.stations.get(stream, self.settings)

    def _classifier_for(self, silence_dbfs: float) -> ContentClassifier:
        found = self._classifiers.get(silence_dbfs)
        if found is None:
            from model.content import ContentClassifier

            assert self.classifier is not None
            found = self._classifiers[silence_dbfs] = ContentClassifier(
                silence_dbfs=silence_dbfs,
                vad=self.classifier.vad,
                svm=self.classifier.svm,
                cnn=self.classifier.cnn,
                network=self.classifier.cnn is not None,
            )
        return found

    def stream(self, state: StreamState) -> ContentStream:
        """The content state of ``state`` (made on first use)."""
        found = self._streams.get(state)
        if found is None:
            found = self._streams[state] = ContentStream(
                state.stream,
                self.settings_for(state.stream),
                keep_audio=self.classifier is not None,
            )
        return found

    def accept(self, state: StreamState, frame: AudioFrame, result: str) -> None:
        """After ``state.accept(frame)`` returned ``result``."""
        self.stream(state).accept(frame, result)

    def source_event(self, event: Event, state: StreamState | None) -> Event:
        """A streamer's source event with ``at_s`` on the worker's audio timeline."""
        at_s = event.at_s if state is None else self.stream(state).audio_time(event.at_s)
        return dataclasses.replace(event, at_s=at_s)

    def submit(self, due: Sequence[DueWindow]) -> ContentJob:
        """Start classifying ``due`` windows (their audio is copied now, in the caller's thread)."""
        if self._executor is None or self.classifier is None:
            return ContentJob(None, len(due))
        jobs = [
            (
                self.stream(item.state).samples(item.window.start_s, item.window.end_s),
                self._classifier_for(self.settings_for(item.state.stream).silence_dbfs),
            )
            for item in due
        ]

        def classify() -> list[Any]:
            return [None if w is None else classifier.classify(w) for w, classifier in jobs]

        return ContentJob(self._executor.submit(classify), len(due))

    def annotate(
        self, state: StreamState, window: PendingWindow, update: TagUpdate, result: Any
    ) -> tuple[TagUpdate, list[Event]]:
        """``update`` with its content fields, and the events up to its window's end."""
        if self.classifier is None:
            return update, []
        content = self.stream(state)
        now = time.time()
        events = content.events_until(window.end_s, now=now)
        if result is None:
            self.unclassified += 1
            return update, events
        self.classified += 1
        fields = result.as_dict(start_s=window.start_s)
        update = dataclasses.replace(update, **fields)
        change = content.content_event(update, now=now)
        if change is not None:
            events.append(change)
        return update, events

    def close(self) -> None:
        """Stop the classifier's thread (waits for a running batch); safe to call twice."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
