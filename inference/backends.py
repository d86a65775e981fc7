"""Streaming mode of the inference worker: per-stream musicnn caches, one batched push per hop.

In exact mode (``inference.mode = "exact"``) the worker recomputes every due
window from its mel frames.  In streaming mode (``"streaming"``) each stream
keeps a :class:`model.streaming.StreamState`; its new mel frames are pushed
through :class:`model.streaming.StreamingMusicnn`, which computes only the new
frames of the front and mid end.  A window ``[s, s + window_frames)`` is
computed when ``lookahead_frames`` (73 for musicnn, 1.168 s) more frames have
arrived, by pushing exactly the frames up to that point, so an update describes
the same window (same ``start_s``, ``end_s`` and ``capture_time``) as in exact
mode, 1.168 s later, with probabilities within ~0.1 of the exact ones
(:mod:`model.streaming` explains why they differ).  With a steady hop every
due stream pushes ``hop_frames`` frames, so the due streams of one hop run as
one batch.

Windows whose look-ahead will never come (the stream ended, had a long gap, or
was forgotten) are recomputed exactly from their mel frames, like exact mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.streams import PendingWindow, StreamState

__all__ = ["MODES", "DueWindow", "StreamingBackend", "StreamingError"]

#: The values of ``inference.mode``.
MODES = ("exact", "streaming")


class StreamingError(ValueError):
    """The model cannot be streamed (only musicnn architectures can)."""


@dataclass(frozen=True, eq=False)
class DueWindow:
    """A window ready for the model, with its stream and (streaming) the frames to push.

    Attributes
    ----------
    state : StreamState
    window : PendingWindow
    frames : np.ndarray [shape=(n, n_mels)] or None
        The stream's frames up to the end of the window's look-ahead; ``None``
        when the window is recomputed exactly from ``window.mel``.
    """

    state: StreamState
    window: PendingWindow
    frames: np.ndarray | None


class StreamingBackend:
    """Runs due windows of many streams: streamable ones pushed, the others exactly.

    Parameters
    ----------
    tagger : model.Tagger
        A musicnn tagger (``tagger.network`` is streamed; ``tagger.predict``
        recomputes the windows that cannot be streamed).

    Raises
    ------
    StreamingError
        If the tagger's network is not a musicnn.
    """

    def __init__(self, tagger: Any) -> None:
        from model.streaming import StreamingMusicnn

        try:
            self.model = StreamingMusicnn(
                tagger.network, window_frames=tagger.contract.window_frames
            )
        except ValueError as exc:
            raise StreamingError(
                f"inference.mode = 'streaming' needs a musicnn model, {tagger.name!r} is not "
                "one; use mode = 'exact' or a musicnn model"
            ) from exc
        self.tagger = tagger
        self.lookahead_frames: int = self.model.lookahead_frames

    @property
    def lookahead_seconds(self) -> float:
        """Delay the look-ahead adds to every streamed update."""
        return float(self.lookahead_frames * self.tagger.contract.features.frame_seconds)

    def warm_up(self, hop_frames: int) -> None:
        """Trace the streaming step for the first push and for a hop, so real calls are fast."""
        n_mels = self.tagger.contract.features.n_mels
        state = self.model.new_state()
        first = self.model.window_frames + self.lookahead_frames
        with self._device():
            self.model.push([state], [np.zeros((first, n_mels), np.float32)])
            self.model.push([state], [np.zeros((hop_frames, n_mels), np.float32)])

    def take_due(self, states: list[StreamState], limit: int) -> list[DueWindow]:
        """At most one due window per stream (the oldest), at most ``limit`` in all.

        A streamable window is due once the stream has buffered the frames up
        to the end of its look-ahead; those frames are taken from the stream.
        Windows that cannot be streamed are always due.
        """
        due: list[DueWindow] = []
        for state in states:
            if len(due) >= limit:
                break
            window = state.peek_pending()
            if window is None:
                continue
            if not window.streamable:
                state.take_pending(1)
                due.append(DueWindow(state, window, None))
                continue
            if state.backend_state is None or state.backend_segment != window.segment:
                state.backend_state = self.model.new_state()
                state.backend_segment = window.segment
            needed = window.end_frame + self.lookahead_frames - state.backend_state.frames_seen
            if needed <= 0:  # pragma: no cover - every push ends at one window's due point
                state.take_pending(1)
                due.append(DueWindow(state, window, None))
            elif state.frames_buffered >= needed:
                state.take_pending(1)
                due.append(DueWindow(state, window, state.take_frames(needed)))
        return due

    def run(self, due: list[DueWindow]) -> np.ndarray:
        """Tag probabilities of ``due``, in order (one batched push plus one exact batch).

        Returns
        -------
        np.ndarray [shape=(len(due), n_tags)], float32
        """
        result = np.zeros((len(due), len(self.tagger.tags)), dtype=np.float32)
        streamed = [i for i, d in enumerate(due) if d.frames is not None]
        exact = [i for i, d in enumerate(due) if d.frames is None]
        if streamed:
            with self._device():
                outputs = self.model.push(
                    [due[i].state.backend_state for i in streamed],
                    [frames for i in streamed if (frames := due[i].frames) is not None],
                )
            for i, probabilities in zip(streamed, outputs, strict=True):
                assert probabilities is not None  # the window and its look-ahead were pushed
                result[i] = probabilities
        if exact:
            result[exact] = self.tagger.predict(np.stack([due[i].window.mel for i in exact]))
        return result

    def _device(self) -> Any:
        import tensorflow as tf

        return tf.device(self.tagger.device)
