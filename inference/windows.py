"""Per-stream sliding windows of the inference worker, free of sockets and of the model.

One :class:`StreamState` per stream turns received :class:`protocol.AudioFrame`
blocks into :class:`PendingWindow` objects::

    audio block -> sequence check (duplicates dropped, gaps filled or reset)
                -> mono float32 (NaN/inf replaced, counted)
                -> soxr stream resampler to the model's rate (none when equal)
                -> MelExtractor (incremental log-mel frames)
                -> WindowScheduler (ring buffer of window_frames; a window every hop)
                -> PendingWindow (mel window, audio time, capture time)

The worker's model backend (:mod:`inference.backends`) decides which pending
windows are due and runs them in batches; each window's probabilities go back
to :meth:`StreamState.make_update`, which applies the exponential moving
average and builds the :class:`protocol.TagUpdate`.

Timing
------
Audio time is seconds since the stream's first received sample, on the
model's sample-rate timeline.  Window ``k`` of a segment starts at mel frame
``s = k * hop_frames`` (frame ``t`` is centred on sample ``t * hop_length``,
exactly as :func:`model.log_mel` and ``Tagger.tag_audio``), so
``start_s = s * hop_length / sample_rate`` and
``end_s = (s + window_frames) * hop_length / sample_rate``: the window's last
sample is the one just before ``end_s``.  Its ``capture_time`` comes from the
received block that holds that sample: block ``capture_time`` (its first
sample) plus the sample's offset in the block.

Sequence gaps
-------------
A block whose ``seq`` is lower than expected (a duplicate or a late block) is
dropped and counted, unless its ``capture_time`` is newer than the last block's:
then the streamer restarted (its ``seq`` starts again at 0) and the worker
starts the stream afresh (:data:`AcceptResult.RESTARTED`).  A block whose
``seq`` skips numbers is a gap: the missing audio is estimated as *missing
blocks x the previous block's duration*.  When that is at most
``max_gap_seconds`` (and at most :data:`MAX_FILL_SECONDS`) the gap is filled
with silence, so window times and the capture-time mapping stay right and the
windows around the gap carry a short silence.  A longer gap, or a change of
sample rate, starts a new *segment*: resampler, mel extractor and window are
reset (no window mixes audio from both sides of the gap) and the audio clock
jumps by the missing time, so ``start_s``/``end_s`` keep matching the stream's
wall-clock progress.  The moving average is kept across segments.

Memory
------
Everything a stream holds is bounded: the resampler and mel extractor keep a
few hundred samples, the window ring buffer ``window_frames`` frames, the
capture-time anchors :data:`MAX_ANCHORS` blocks, and at most
``max_pending_windows`` windows wait for the model (older ones are dropped and
counted).  Blocks themselves are limited by the protocol (10 s, 16 MiB).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.errors import SettingsError
from model import FeatureSpec, MelExtractor
from model.audio import SAMPLE_LIMIT, Resampler, finite_samples, to_mono_float32
from protocol import AudioFrame, TagUpdate

__all__ = [
    "MAX_ANCHORS",
    "MAX_FILL_SECONDS",
    "SAMPLE_LIMIT",
    "AcceptResult",
    "ExponentialAverage",
    "PendingWindow",
    "SettingsError",
    "StreamSettings",
    "StreamState",
    "WindowScheduler",
]

#: Longest gap ever filled with silence, whatever ``max_gap_seconds`` says.
MAX_FILL_SECONDS = 10.0
#: Received blocks remembered per stream for the audio-time -> capture-time mapping.
MAX_ANCHORS = 256
#: A stream's quickest transit (:meth:`StreamState.observe_transit`) is the least of the
#: last one to two epochs of this many seconds (monotonic time): a clock drifting 100 ppm
#: moves 30 ms in that time, a backlog has to outlast it to pass for an offset.
TRANSIT_EPOCH_S = 300.0


@dataclass(frozen=True)
class StreamSettings:
    """What every stream of one worker shares: window, hop, smoothing and gap policy.

    Parameters
    ----------
    spec : FeatureSpec
        The model's features (sample rate, hop length, mel bands).
    window_frames : int > 0
        Mel frames per window (the model contract's).
    hop_frames : int > 0
        Mel frames between window starts.
    ema_seconds : float > 0
        Time constant of the moving average, in seconds of audio.
    max_gap_seconds : float > 0
        Longest sequence gap filled with silence; longer gaps reset the window.
    max_pending_windows : int > 0
        Most windows one stream may have waiting for the model.
    lookahead_frames : int >= 0
        The model backend's (:attr:`inference.backends.Backend.lookahead_frames`).
        0 (exact backend): a window is due when its last frame arrives.  More
        (streaming backend, :mod:`model.streaming`): the stream also keeps its
        new mel frames for the backend, and a window is computed once this many
        frames have followed it (:attr:`PendingWindow.streamable`).
    """

    spec: FeatureSpec
    window_frames: int
    hop_frames: int
    ema_seconds: float = 10.0
    max_gap_seconds: float = 1.0
    max_pending_windows: int = 64
    lookahead_frames: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.lookahead_frames, int) or self.lookahead_frames < 0:
            raise SettingsError(f"lookahead_frames={self.lookahead_frames!r} must be 0 or more")
        for name in ("window_frames", "hop_frames", "max_pending_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise SettingsError(f"{name}={value!r} must be a positive integer")
        for name in ("ema_seconds", "max_gap_seconds"):
            value = getattr(self, name)
            if not value > 0:
                raise SettingsError(f"{name}={value!r} must be greater than 0")

    @classmethod
    def from_seconds(
        cls,
        *,
        spec: FeatureSpec,
        window_frames: int,
        window_seconds: float,
        hop_seconds: float,
        ema_seconds: float,
        max_gap_seconds: float,
    ) -> StreamSettings:
        """Settings from the config's seconds, checked against the model's window.

        Raises
        ------
        SettingsError
            If ``window_seconds`` does not give the contract's ``window_frames``
            or ``hop_seconds`` is shorter than one mel frame.
        """
        configured = spec.frames_for(window_seconds)
        if configured != window_frames:
            exact = window_frames * spec.frame_seconds
            raise SettingsError(
                f"inference.window_seconds={window_seconds:g} gives {configured} frames but "
                f"the model needs {window_frames} ({exact:.3f} s); set window_seconds = "
                f"{exact:.3f}"
            )
        hop_frames = spec.frames_for(hop_seconds)
        if hop_frames < 1:
            raise SettingsError(
                f"inference.hop_seconds={hop_seconds:g} is shorter than one mel frame "
                f"({spec.frame_seconds:.4f} s)"
            )
        return cls(
            spec=spec,
            window_frames=window_frames,
            hop_frames=hop_frames,
            ema_seconds=ema_seconds,
            max_gap_seconds=max_gap_seconds,
        )

    @property
    def hop_seconds(self) -> float:
        """The hop actually used (a whole number of frames)."""
        return self.hop_frames * self.spec.frame_seconds

    @property
    def window_seconds(self) -> float:
        return self.window_frames * self.spec.frame_seconds

    @property
    def ema_alpha(self) -> float:
        """Weight of each new window: ``1 - exp(-hop_seconds / ema_seconds)``."""
        return 1.0 - math.exp(-self.hop_seconds / self.ema_seconds)


class WindowScheduler:
    """Sliding windows over a stream of mel frames, one every ``hop_frames``.

    Frames are kept in a ring buffer of ``window_frames`` rows; a window is
    copied out the moment its last frame arrives, so pushing any number of
    frames at once yields every window they complete, in order.

    Parameters
    ----------
    window_frames : int > 0
    hop_frames : int > 0
        May exceed ``window_frames`` (frames between windows are then skipped).
    n_mels : int > 0

    Examples
    --------
    >>> scheduler = WindowScheduler(window_frames=4, hop_frames=2, n_mels=1)
    >>> [start for start, _ in scheduler.push(np.zeros((9, 1), np.float32))]
    [0, 2, 4]
    """

    def __init__(self, *, window_frames: int, hop_frames: int, n_mels: int) -> None:
        if window_frames <= 0 or hop_frames <= 0 or n_mels <= 0:
            raise ValueError(
                f"window_frames={window_frames}, hop_frames={hop_frames} and "
                f"n_mels={n_mels} must be positive"
            )
        self.window_frames = window_frames
        self.hop_frames = hop_frames
        self.n_mels = n_mels
        self._ring = np.zeros((window_frames, n_mels), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget all frames: the next frame is frame 0 of a new segment."""
        self.frames_seen = 0
        self.next_start = 0

    def push(self, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add mel frames; return ``(start_frame, window)`` for every window they complete.

        Parameters
        ----------
        frames : np.ndarray [shape=(k, n_mels)]

        Returns
        -------
        list of (int, np.ndarray [shape=(window_frames, n_mels), float32])
            Windows are copies; ``start_frame`` counts from the segment's first frame.
        """
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != self.n_mels:
            raise ValueError(f"frames must have shape (k, {self.n_mels}), got {frames.shape}")
        windows: list[tuple[int, np.ndarray]] = []
        done = 0
        while done < len(frames):
            if self.frames_seen < self.next_start:  # hop > window: frames nobody needs
                skip = min(self.next_start - self.frames_seen, len(frames) - done)
                self.frames_seen += skip
                done += skip
                continue
            due_at = self.next_start + self.window_frames
            count = min(due_at - self.frames_seen, len(frames) - done)
            self._write(frames[done : done + count])
            done += count
            if self.frames_seen == due_at:
                windows.append((self.next_start, self._window()))
                self.next_start += self.hop_frames
        return windows

    def _write(self, frames: np.ndarray) -> None:
        size = self.window_frames
        position = self.frames_seen % size
        first = min(len(frames), size - position)
        self._ring[position : position + first] = frames[:first]
        self._ring[: len(frames) - first] = frames[first:]
        self.frames_seen += len(frames)

    def _window(self) -> np.ndarray:
        position = self.frames_seen % self.window_frames
        return np.concatenate([self._ring[position:], self._ring[:position]])


class ExponentialAverage:
    """``smoothed = alpha * value + (1 - alpha) * smoothed``; the first value starts it.

    Parameters
    ----------
    alpha : float in (0, 1]
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha={alpha!r} must be in (0, 1]")
        self.alpha = alpha
        self.value: np.ndarray | None = None

    def update(self, value: np.ndarray) -> np.ndarray:
        """Fold in ``value``; return the new average (a new float32 array)."""
        value = np.asarray(value, dtype=np.float32)
        if self.value is None:
            self.value = value.copy()
        else:
            self.value = (self.alpha * value + (1.0 - self.alpha) * self.value).astype(np.float32)
        return self.value.copy()


@dataclass(frozen=True, eq=False)
class PendingWindow:
    """A window due for the model.

    Attributes
    ----------
    stream : str
    start_s, end_s : float
        Audio time of the window, seconds since the stream's first sample.
    mel : np.ndarray [shape=(window_frames, n_mels), float32]
    capture_time : float
        Unix time at which the window's last sample was captured.
    received_time : float
        Unix time at which the worker received the block holding that sample.
    end_frame : int
        Mel frames of its segment up to and including the window's last frame.
    segment : int
        The stream's segment (:attr:`StreamState.segment`) the window belongs to.
    block_seq : int
        ``seq`` + 1 of the audio block whose samples completed the window (for acks).
    streamable : bool
        Streaming mode: the streaming model computes it once ``end_frame +
        lookahead_frames`` frames of the segment have arrived.  False in exact
        mode and for windows whose look-ahead will never come (the stream ended,
        was reset or forgotten first): those are recomputed from ``mel``.
    """

    stream: str
    start_s: float
    end_s: float
    mel: np.ndarray
    capture_time: float
    received_time: float
    end_frame: int = 0
    segment: int = 0
    block_seq: int = 0
    streamable: bool = False


class AcceptResult:
    """What :meth:`StreamState.accept` did with a block (string constants)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    GAP_FILLED = "gap_filled"
    GAP_RESET = "gap_reset"
    FORMAT_RESET = "format_reset"
    ENDED = "ended"
    #: An older ``seq`` with a newer ``capture_time``: the streamer restarted; the
    #: block was not taken and the caller should start a new state for the stream.
    RESTARTED = "restarted"


@dataclass(frozen=True)
class _Anchor:
    audio_s: float  # audio time of the block's first sample
    capture_time: float
    received_time: float


class StreamState:
    """Everything the worker keeps about one stream.

    Parameters
    ----------
    stream : str
        Stream id.
    settings : StreamSettings
    now : float
        Monotonic time of creation (for idle eviction).

    Attributes
    ----------
    gaps : int
        Sequence gaps seen (filled or reset).
    dropped : int
        Blocks dropped as duplicates or late, plus windows dropped because too
        many were pending.
    samples_replaced : int
        NaN or infinite samples replaced (NaN by 0, +-inf by +-1).
    resets : int
        Segments started after a long gap or a format change.
    updates : int
        Tag updates made (the next update's ``seq``).
    shed : collections.Counter {str: int}
        Windows shed, by reason: ``stale`` (older than the worker's bound when
        their turn came, :meth:`shed_stale`), ``overflow`` (more than
        ``max_pending_windows`` waiting).  Also counted in ``dropped``.
    live : bool
        Whether the stream's audio is live (its last block said so): only live
        streams are shed as stale.
    priority : bool
        Whether the stream matches ``inference.priority_streams``: its due windows
        go into a batch before the other streams' (``Worker._take_due``).
    reply_to : object or None
        Where the worker sends this stream's acks (the owner's last connection
        that can be answered), ``None`` for a sender that cannot be answered.
    acked_seq : int
        The last ack sent (-1: none yet).
    ended : bool
        An end-of-stream arrived; the tail has been flushed.
    last_active : float
        Monotonic time of the last accepted message.
    min_transit_s : float
        Least (reception - capture time) of the stream's recent blocks, seconds (``inf``
        before the first): the sender's clock offset plus the quickest delivery
        (:meth:`observe_transit`).
    segment : int
        Segments started so far (0 for the first); bumped by long gaps and format changes.
    backend_cache : object
        The model backend's cache for this stream (``None`` until the backend
        makes one; the streaming backend's :class:`model.streaming.StreamCache`),
        with ``backend_cache_segment`` the segment it belongs to.
    """

    def __init__(self, stream: str, *, settings: StreamSettings, now: float) -> None:
        self.stream = stream
        self.settings = settings
        self.gaps = 0
        self.dropped = 0
        self.samples_replaced = 0
        self.resets = 0
        self.updates = 0
        self.shed: collections.Counter[str] = collections.Counter()
        self.live = True
        self.priority = False
        self.reply_to: Any = None
        self.acked_seq = -1
        self.end_seq: int | None = None
        self.end_acked = False
        self.ended = False
        self.last_active = now
        self.min_transit_s = float("inf")
        self._transit_minima = [float("inf"), float("inf")]  # previous epoch, this one
        self._transit_epoch_start = now
        self.expected_seq: int | None = None
        self.sample_rate: int | None = None
        self._last_block_seconds = 0.0
        self._last_capture_time = float("-inf")
        self._ema = ExponentialAverage(settings.ema_alpha)
        self._extractor = MelExtractor(spec=settings.spec)
        self._scheduler = WindowScheduler(
            window_frames=settings.window_frames,
            hop_frames=settings.hop_frames,
            n_mels=settings.spec.n_mels,
        )
        self._resampler: Resampler | None = None
        self._pending: collections.deque[PendingWindow] = collections.deque()
        self._anchors: collections.deque[_Anchor] = collections.deque(maxlen=MAX_ANCHORS)
        self._segment_origin_s = 0.0  # audio time of the current segment's first sample
        self._segment_input_samples = 0  # samples received (at the input rate) in the segment
        self.segment = 0
        self.backend_cache: Any = None
        self.backend_cache_segment = -1
        self._segment_frames = 0  # mel frames made in the current segment
        self._frames: collections.deque[np.ndarray] = collections.deque()  # not yet taken
        self._frames_buffered = 0

    # -- input ------------------------------------------------------------------------

    def observe_transit(self, transit_s: float, *, now: float) -> float:
        """Take one block's reception minus capture time; return :attr:`min_transit_s`.

        The least over the last one to two :data:`TRANSIT_EPOCH_S` (two epochs' minima),
        not over the stream's life: a sender whose capture clock drifts from the
        worker's (capture times counted from samples at a nominal rate) is followed,
        and is never taken as ever later.
        """
        if now - self._transit_epoch_start >= TRANSIT_EPOCH_S:
            self._transit_minima = [self._transit_minima[1], float("inf")]
            self._transit_epoch_start = now
        self._transit_minima[1] = min(self._transit_minima[1], transit_s)
        self.min_transit_s = min(self._transit_minima)
        return self.min_transit_s

    def accept(self, frame: AudioFrame, *, received_time: float, now: float) -> str:
        """Take one audio block; due windows become :meth:`pending`.

        Parameters
        ----------
        frame : AudioFrame
            A block of this stream (already validated by the protocol).
        received_time : float
            Unix time at which the worker received it.
        now : float
            Monotonic time, for idle eviction.

        Returns
        -------
        str
            One of the :class:`AcceptResult` constants.
        """
        if self.ended:
            self.dropped += 1
            return AcceptResult.ENDED
        result = AcceptResult.ACCEPTED
        if self.expected_seq is not None and frame.seq < self.expected_seq:
            if frame.capture_time > self._last_capture_time + 0.5 * self._last_block_seconds:
                return AcceptResult.RESTARTED
            self.dropped += 1
            return AcceptResult.DUPLICATE
        self.last_active = now
        if self.expected_seq is None and frame.seq > 0:
            # Joined mid-stream (the worker restarted, or the stream was evicted as idle):
            # the blocks before this one never arrived here.  Counted as one gap.
            self.gaps += 1
        if self.sample_rate is not None and frame.sample_rate != self.sample_rate:
            self._new_segment(gap_seconds=0.0)
            result = AcceptResult.FORMAT_RESET
        elif self.expected_seq is not None and frame.seq > self.expected_seq:
            self.gaps += 1
            missing_s = (frame.seq - self.expected_seq) * self._last_block_seconds
            if missing_s <= min(self.settings.max_gap_seconds, MAX_FILL_SECONDS):
                silence = np.zeros(round(missing_s * frame.sample_rate), dtype=np.float32)
                self._add_samples(
                    silence,
                    capture_time=frame.capture_time - missing_s,
                    received_time=received_time,
                )
                result = AcceptResult.GAP_FILLED
            else:
                self._new_segment(gap_seconds=missing_s)
                result = AcceptResult.GAP_RESET
        self.expected_seq = frame.seq + 1
        self.live = frame.live
        self.sample_rate = frame.sample_rate
        self._last_block_seconds = frame.duration_s
        self._last_capture_time = frame.capture_time
        samples, replaced = finite_samples(to_mono_float32(frame))
        self.samples_replaced += replaced
        self._add_samples(samples, capture_time=frame.capture_time, received_time=received_time)
        return result

    def end(self, *, now: float) -> None:
        """The stream is over: flush the resampler and extractor; the tail windows become pending.

        Only whole windows are made (those that end within the audio), so with
        ``hop == window`` the windows are exactly ``Tagger.tag_audio``'s.
        """
        if self.ended:
            return
        self.last_active = now
        if self._resampler is not None:
            self._push_model_rate(self._resampler.flush())
        self._schedule(self._extractor.flush())
        self.ended = True
        lookahead = self.settings.lookahead_frames
        if lookahead:  # no more frames: windows still short of their look-ahead go exact
            self._mark_exact(lambda w: w.end_frame + lookahead > self._segment_frames)

    def drop_lookahead(self) -> None:
        """No more frames will come: every window waiting for its look-ahead is recomputed exactly.

        Nothing to do without a look-ahead (exact backend).
        """
        if not self.settings.lookahead_frames:
            return
        self._mark_exact(lambda w: True)
        self._frames.clear()
        self._frames_buffered = 0

    def _mark_exact(self, predicate: Callable[[PendingWindow], bool]) -> None:
        self._pending = collections.deque(
            dataclasses.replace(w, streamable=False) if w.streamable and predicate(w) else w
            for w in self._pending
        )

    def _new_segment(self, *, gap_seconds: float) -> None:
        """Drop the partial window and the filters' state; the audio clock jumps by the gap."""
        self.resets += 1
        if self.settings.lookahead_frames:
            self.drop_lookahead()
        self.segment += 1
        self._segment_frames = 0
        self._segment_origin_s = self._segment_end_s() + gap_seconds
        self._segment_input_samples = 0
        self._resampler = None
        self._extractor.reset()
        self._scheduler.reset()

    def _segment_end_s(self) -> float:
        if self.sample_rate is None:
            return self._segment_origin_s
        return self._segment_origin_s + self._segment_input_samples / self.sample_rate

    def _add_samples(
        self, samples: np.ndarray, *, capture_time: float, received_time: float
    ) -> None:
        """Mono float32 samples at the stream's rate -> model rate -> frames -> windows."""
        rate = self.sample_rate
        if rate is None:  # first block: accept() sets sample_rate just before calling us
            return
        self._anchors.append(_Anchor(self._segment_end_s(), capture_time, received_time))
        self._segment_input_samples += len(samples)
        target = self.settings.spec.sample_rate
        if rate != target:
            if self._resampler is None:
                self._resampler = Resampler(rate, target)
            samples = self._resampler.push(samples)
        self._push_model_rate(samples)

    def _push_model_rate(self, samples: np.ndarray) -> None:
        if len(samples):
            self._schedule(self._extractor.push(samples))

    def _schedule(self, frames: np.ndarray) -> None:
        spec = self.settings.spec
        lookahead = self.settings.lookahead_frames
        self._segment_frames += len(frames)
        if lookahead and len(frames):
            self._frames.append(np.asarray(frames, dtype=np.float32))
            self._frames_buffered += len(frames)
        for start_frame, mel in self._scheduler.push(frames):
            start_s = self._segment_origin_s + start_frame * spec.frame_seconds
            end_s = start_s + self.settings.window_seconds
            capture_time, received_time = self._times_at(end_s - 1.0 / spec.sample_rate)
            if len(self._pending) >= self.settings.max_pending_windows:
                self._pending.popleft()
                self.dropped += 1
                self.shed["overflow"] += 1
            self._pending.append(
                PendingWindow(
                    stream=self.stream,
                    start_s=start_s,
                    end_s=end_s,
                    mel=mel,
                    capture_time=capture_time,
                    received_time=received_time,
                    end_frame=start_frame + self.settings.window_frames,
                    segment=self.segment,
                    block_seq=self.expected_seq or 0,
                    streamable=lookahead > 0,
                )
            )

    def _times_at(self, audio_s: float) -> tuple[float, float]:
        """Capture and receive time of the sample at ``audio_s`` (from the block holding it)."""
        anchors = self._anchors
        if not anchors:  # pragma: no cover - windows only come from received samples
            return 0.0, 0.0
        index = bisect.bisect_right([a.audio_s for a in anchors], audio_s) - 1
        anchor = anchors[max(index, 0)]
        return anchor.capture_time + (audio_s - anchor.audio_s), anchor.received_time

    # -- output -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Windows waiting for the model."""
        return len(self._pending)

    def peek_pending(self) -> PendingWindow | None:
        """The oldest pending window, left in place (``None`` when there is none)."""
        return self._pending[0] if self._pending else None

    @property
    def frames_buffered(self) -> int:
        """Streaming mode: mel frames of the segment not yet taken by :meth:`take_frames`."""
        return self._frames_buffered

    def take_frames(self, count: int) -> np.ndarray:
        """Streaming mode: remove and return the ``count`` oldest buffered mel frames.

        Returns
        -------
        np.ndarray [shape=(count, n_mels), float32]
        """
        if not 0 <= count <= self._frames_buffered:
            raise ValueError(f"count={count} must be in [0, {self._frames_buffered}]")
        taken: list[np.ndarray] = []
        needed = count
        while needed:
            head = self._frames[0]
            if len(head) <= needed:
                taken.append(self._frames.popleft())
                needed -= len(head)
            else:
                taken.append(head[:needed])
                self._frames[0] = head[needed:]
                needed = 0
        self._frames_buffered -= count
        if not taken:
            return np.zeros((0, self.settings.spec.n_mels), dtype=np.float32)
        return np.concatenate(taken)

    def unshed_backlog(self, *, max_ahead_s: float) -> int:
        """The waiting windows that shedding stale work (:meth:`shed_stale`) leaves alone.

        All of them for a stream that is not live; for a live stream, those whose audio is
        more than ``max_ahead_s`` ahead of the worker's clock (a file sent faster than real
        time).  Nothing but the sender's pace bounds these.
        """
        if not self.live:
            return len(self._pending)
        return sum(1 for w in self._pending if w.capture_time > w.received_time + max_ahead_s)

    def shed_stale(self, *, before: float, max_ahead_s: float) -> int:
        """Drop the waiting windows received before ``before`` (Unix time); return how many.

        Only windows of a live stream whose audio is not ahead of the worker's clock
        (capture time at most ``max_ahead_s`` after reception: a file sent faster than
        real time is not live) are shed.  A window's time is when the worker received
        its last sample, or earlier when that sample waited on the way (in the sender's
        queue or the socket, while the worker was busy): its capture time plus the
        stream's quickest transit (:attr:`min_transit_s`, which takes the sender's
        clock offset off), so a sender's clock can only make its own stream shed.
        Windows leave in order from the oldest, so the stream is fast-forwarded to its
        first fresh window.  Counted in :attr:`shed` (``stale``) and :attr:`dropped`.
        """
        if not self.live:
            return 0
        count = 0
        pending = self._pending
        transit = self.min_transit_s
        while pending:
            window = pending[0]
            if window.capture_time > window.received_time + max_ahead_s:
                break
            if min(window.received_time, window.capture_time + transit) >= before:
                break
            pending.popleft()
            count += 1
        if count:
            self.shed["stale"] += count
            self.dropped += count
        return count

    def ack_position(self) -> int:
        """The ``seq`` an ack may carry: every block below it taken, its windows published.

        A waiting window was completed by block ``block_seq - 1``; windows wait in
        order, so every earlier block's windows have left.
        """
        if self._pending:
            return max(self._pending[0].block_seq - 1, 0)
        return self.expected_seq or 0

    def behind_s(self, window: PendingWindow) -> float:
        """Seconds of this stream's audio received beyond ``window``'s end (0 if none)."""
        return max(0.0, self._segment_end_s() - window.end_s)

    def take_pending(self, limit: int) -> list[PendingWindow]:
        """Remove and return up to ``limit`` of the oldest pending windows."""
        count = min(limit, len(self._pending))
        return [self._pending.popleft() for _ in range(count)]

    def make_update(
        self,
        window: PendingWindow,
        probabilities: np.ndarray,
        *,
        model: str,
        tags: tuple[str, ...],
        published_time: float,
    ) -> TagUpdate:
        """The tag update of ``window``: its probabilities and the updated moving average."""
        probabilities = np.nan_to_num(np.asarray(probabilities, dtype=np.float32), nan=0.0)
        smoothed = self._ema.update(probabilities)
        update = TagUpdate(
            stream=self.stream,
            seq=self.updates,
            start_s=window.start_s,
            end_s=window.end_s,
            model=model,
            tags=tags,
            probabilities=probabilities,
            smoothed=smoothed,
            capture_time=window.capture_time,
            received_time=window.received_time,
            published_time=published_time,
            gaps=self.gaps,
            dropped=self.dropped,
            shed=sum(self.shed.values()),
            behind_s=self.behind_s(window),
        )
        self.updates += 1
        return update

    def counters(self) -> dict[str, int]:
        """This stream's counters, for logs."""
        return {
            "gaps": self.gaps,
            "dropped": self.dropped,
            "samples_replaced": self.samples_replaced,
            "resets": self.resets,
            "shed": sum(self.shed.values()),
            "updates": self.updates,
        }


def replace_settings(settings: StreamSettings, **changes: Any) -> StreamSettings:
    """A copy of ``settings`` with ``changes`` (for tests and benchmarks)."""
    return dataclasses.replace(settings, **changes)
