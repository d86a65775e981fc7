"""The worker's model backends: which waiting windows are due, and how they are computed.

The worker (:mod:`inference.worker`) holds one :class:`Backend` and runs one
loop around it::

    streams' pending windows --take_due--> [DueWindow] --run--> probabilities --> updates

A backend answers four questions:

- *look-ahead*: how many mel frames must follow a window's last frame before
  it can be computed (:attr:`Backend.lookahead_frames`; the streams keep that
  many frames for it, :class:`inference.windows.StreamSettings`);
- *what is due*: :meth:`Backend.take_due` takes, from the streams with
  waiting windows, those it can compute now (a fair share per stream, at most
  ``limit``);
- *run it*: :meth:`Backend.run` computes a batch of due windows;
- *per-stream cache*: :meth:`Backend.new_cache` makes what the backend keeps
  for one stream between calls (``None`` when it keeps nothing); it lives in
  :attr:`inference.windows.StreamState.backend_cache` and is made afresh for
  every segment of the stream (:meth:`Backend.cache_for`).

``inference.mode`` names the backend (:data:`BACKENDS`):

- ``"exact"`` (:class:`ExactBackend`): every window is recomputed from its mel
  frames by ``Tagger.predict``, as soon as its last frame has arrived.
- ``"streaming"`` (:class:`StreamingBackend`): each stream keeps a
  :class:`model.streaming.StreamCache`; its new mel frames are pushed through
  :class:`model.streaming.StreamingMusicnn`, which computes only the new frames
  of the front and mid end.  A window ``[s, s + window_frames)`` is computed
  when ``lookahead_frames`` (73 for musicnn, 1.168 s) more frames have arrived,
  by pushing exactly the frames up to that point, so an update describes the
  same window (same ``start_s``, ``end_s`` and ``capture_time``) as in exact
  mode, 1.168 s later, with probabilities within ~0.1 of the exact ones
  (:mod:`model.streaming` explains why they differ).  With a steady hop every
  due stream pushes ``hop_frames`` frames, so the due streams of one hop run as
  one batch.  Windows whose look-ahead will never come (the stream ended, had
  a long gap, or was forgotten) are recomputed exactly from their mel frames.

What runs the network is the tagger's business (``model.backend``:
TensorFlow, ONNX Runtime, or "auto", :func:`model.tagger.resolve_backend`);
another way of choosing windows is another subclass of :class:`Backend` and
an entry in :data:`BACKENDS` (and in the choices of ``inference.mode``); the
worker does not change.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from inference.errors import SettingsError
from inference.windows import PendingWindow, StreamState
from model.contract import ModelContract

__all__ = [
    "BACKENDS",
    "Backend",
    "DueWindow",
    "ExactBackend",
    "StreamingBackend",
    "backend_class",
]


@dataclass(frozen=True, eq=False)
class DueWindow:
    """A window taken for the model, with the stream it belongs to.

    Attributes
    ----------
    state : StreamState
        The stream's state (its update is made by ``state.make_update``).
    window : PendingWindow
    lookahead_s : float >= 0
        Seconds of audio after the window that its computation waited for; the
        worker's latency counts from the last sample an update needed.
    """

    state: StreamState
    window: PendingWindow
    lookahead_s: float = 0.0


class Backend(abc.ABC):
    """How the worker computes tag probabilities for due windows.

    Parameters
    ----------
    tagger : model.Tagger
        The loaded model.

    Raises
    ------
    SettingsError
        If this backend cannot run ``tagger``'s model.
    """

    #: The ``inference.mode`` value that selects this backend.
    mode: ClassVar[str]
    #: The ``model.backend`` values (what runs the network) this mode works with.
    model_backends: ClassVar[tuple[str, ...]] = ("tensorflow", "onnxruntime", "auto")

    def __init__(self, tagger: Any) -> None:
        self.tagger = tagger
        #: Mel frames that must follow a window's last frame before it is due.
        self.lookahead_frames: int = 0

    @classmethod
    def check(cls, contract: ModelContract) -> None:
        """Raise :class:`SettingsError` if the model of ``contract`` cannot run here.

        Called before the model is loaded (no TensorFlow), so a mode that does
        not fit the model fails at once; the default accepts every model.
        """
        return None

    @property
    def lookahead_seconds(self) -> float:
        """Delay the look-ahead adds to every update it computes."""
        return float(self.lookahead_frames * self.tagger.contract.features.frame_seconds)

    def warm_up(self, *, max_batch: int, hop_frames: int) -> None:
        """Run the model once at its largest batch, so memory peaks at start and calls are fast.

        Parameters
        ----------
        max_batch : int > 0
            The most windows :meth:`run` will get at once.
        hop_frames : int > 0
            Mel frames between two windows of a stream.
        """
        self.tagger.warm_up(batch_size=max_batch)

    def new_cache(self) -> Any:
        """What the backend keeps about one stream before its first frame (``None``: nothing)."""
        return None

    def cache_for(self, state: StreamState, segment: int) -> Any:
        """``state``'s cache for ``segment``: a new one when the stream started a new segment."""
        if state.backend_cache is None or state.backend_cache_segment != segment:
            state.backend_cache = self.new_cache()
            state.backend_cache_segment = segment
        return state.backend_cache

    @abc.abstractmethod
    def take_due(self, states: Sequence[StreamState], limit: int) -> list[DueWindow]:
        """Take up to ``limit`` due windows from ``states`` (streams with windows waiting).

        Streams are served in turn, so a busy stream cannot starve the others;
        ended streams come first in ``states``.  A window taken is removed from
        its stream; one left behind is taken by a later call.
        """

    @abc.abstractmethod
    def run(self, due: Sequence[DueWindow]) -> np.ndarray:
        """Tag probabilities of ``due``, in order.

        Returns
        -------
        np.ndarray [shape=(len(due), n_tags)], float32
        """

    @abc.abstractmethod
    def has_due(self, states: Sequence[StreamState]) -> bool:
        """Whether :meth:`take_due` would take a window now (nothing is taken)."""


class ExactBackend(Backend):
    """Every window recomputed from its mel frames by ``Tagger.predict`` (``mode = "exact"``).

    A window is due as soon as its last frame arrives; :meth:`take_due` takes
    one window per stream in turn until ``limit`` windows are taken.
    """

    mode = "exact"

    def take_due(self, states: Sequence[StreamState], limit: int) -> list[DueWindow]:
        due: list[DueWindow] = []
        waiting = [state for state in states if state.pending]
        while waiting and len(due) < limit:
            for state in list(waiting):
                if len(due) >= limit:
                    break
                due.extend(DueWindow(state, window) for window in state.take_pending(1))
                if not state.pending:
                    waiting.remove(state)
        return due

    def run(self, due: Sequence[DueWindow]) -> np.ndarray:
        return self.tagger.predict(np.stack([item.window.mel for item in due]))

    def has_due(self, states: Sequence[StreamState]) -> bool:
        return any(state.pending for state in states)


@dataclass(frozen=True, eq=False, kw_only=True)
class _PushedWindow(DueWindow):
    """A streamed window: ``frames`` are the stream's mel frames up to its look-ahead's end."""

    frames: np.ndarray


class StreamingBackend(Backend):
    """Streamable windows pushed through per-stream musicnn caches, the others exactly.

    ``mode = "streaming"``; musicnn models only.  The incremental step runs on
    the tagger's backend: :class:`model.streaming.StreamingMusicnn` over the
    Keras network on TensorFlow, or its ONNX graph (``streaming.onnx``, built
    once beside ``model.onnx``, :func:`model.onnx.load_streaming_step`) on ONNX
    Runtime, without TensorFlow.

    Raises
    ------
    SettingsError
        If the tagger's network is not a musicnn.
    """

    mode = "streaming"

    def __init__(self, tagger: Any) -> None:
        super().__init__(tagger)
        from model.streaming import StreamingMusicnn

        try:
            if tagger.backend == "onnxruntime":
                from model.onnx import load_streaming_step

                if tagger.folder is None:
                    raise SettingsError(
                        f"inference.mode = 'streaming' needs the model folder of {tagger.name!r} "
                        "(its streaming.onnx or model.keras); use mode = 'exact'"
                    )
                device = "cpu" if tagger.device == "/CPU:0" else "gpu"
                self.model = load_streaming_step(tagger.folder, tagger.contract, device=device)
            else:
                self.model = StreamingMusicnn(
                    tagger.network, window_frames=tagger.contract.window_frames
                )
        except ValueError as exc:
            raise SettingsError(self._refusal(tagger.name)) from exc
        self.lookahead_frames = self.model.lookahead_frames

    @classmethod
    def check(cls, contract: ModelContract) -> None:
        if contract.architecture != "musicnn":
            raise SettingsError(cls._refusal(contract.name))

    @staticmethod
    def _refusal(name: str) -> str:
        return (
            f"inference.mode = 'streaming' needs a musicnn model, {name!r} is not one; "
            "use mode = 'exact' or a musicnn model"
        )

    def warm_up(self, *, max_batch: int, hop_frames: int) -> None:
        """Warm up the exact path (for windows without look-ahead), then trace the first push
        and a hop's, so real calls are fast."""
        super().warm_up(max_batch=max_batch, hop_frames=hop_frames)
        n_mels = self.tagger.contract.features.n_mels
        cache = self.model.new_cache()
        first = self.model.window_frames + self.lookahead_frames
        with self._device():
            self.model.push([cache], [np.zeros((first, n_mels), np.float32)])
            self.model.push([cache], [np.zeros((hop_frames, n_mels), np.float32)])

    def new_cache(self) -> Any:
        return self.model.new_cache()

    def _frames_needed(self, state: StreamState, window: PendingWindow) -> int:
        """Frames still to push before ``window`` and its look-ahead are in the stream's cache."""
        cache = state.backend_cache
        pushed = 0
        if cache is not None and state.backend_cache_segment == window.segment:
            pushed = cache.frames_seen
        return window.end_frame + self.lookahead_frames - pushed

    def take_due(self, states: Sequence[StreamState], limit: int) -> list[DueWindow]:
        """At most one due window per stream (the oldest), at most ``limit`` in all.

        A streamable window is due once the stream has buffered the frames up
        to the end of its look-ahead; those frames are taken from the stream.
        Windows that cannot be streamed are always due.
        """
        due: list[DueWindow] = []
        lookahead_s = self.lookahead_seconds
        for state in states:
            if len(due) >= limit:
                break
            window = state.peek_pending()
            if window is None:
                continue
            if not window.streamable:
                state.take_pending(1)
                due.append(DueWindow(state, window))
                continue
            self.cache_for(state, window.segment)
            needed = self._frames_needed(state, window)
            if needed <= 0:  # pragma: no cover - every push ends at one window's due point
                state.take_pending(1)
                due.append(DueWindow(state, window))
            elif state.frames_buffered >= needed:
                state.take_pending(1)
                frames = state.take_frames(needed)
                due.append(_PushedWindow(state, window, lookahead_s, frames=frames))
        return due

    def run(self, due: Sequence[DueWindow]) -> np.ndarray:
        """One batched push for the streamed windows plus one exact batch for the others."""
        result = np.zeros((len(due), len(self.tagger.tags)), dtype=np.float32)
        pushed = [(i, item) for i, item in enumerate(due) if isinstance(item, _PushedWindow)]
        exact = [i for i, item in enumerate(due) if not isinstance(item, _PushedWindow)]
        if pushed:
            with self._device():
                outputs = self.model.push(
                    [item.state.backend_cache for _, item in pushed],
                    [item.frames for _, item in pushed],
                )
            for (i, _), probabilities in zip(pushed, outputs, strict=True):
                assert probabilities is not None  # the window and its look-ahead were pushed
                result[i] = probabilities
        if exact:
            result[exact] = self.tagger.predict(np.stack([due[i].window.mel for i in exact]))
        return result

    def has_due(self, states: Sequence[StreamState]) -> bool:
        for state in states:
            window = state.peek_pending()
            if window is not None and (
                not window.streamable or state.frames_buffered >= self._frames_needed(state, window)
            ):
                return True
        return False

    def _device(self) -> Any:
        """Where the step runs: TensorFlow's device scope, or nothing for ONNX Runtime."""
        if self.model.backend != "tensorflow":
            return contextlib.nullcontext()
        import tensorflow as tf

        return tf.device(self.tagger.device)


#: The backends by ``inference.mode``.
BACKENDS: dict[str, type[Backend]] = {
    backend.mode: backend for backend in (ExactBackend, StreamingBackend)
}


def backend_class(mode: str) -> type[Backend]:
    """The backend of ``inference.mode = mode``.

    Raises
    ------
    SettingsError
        If no backend has that mode.
    """
    try:
        return BACKENDS[mode]
    except KeyError:
        raise SettingsError(
            f"inference.mode={mode!r} names no backend; choose one of {', '.join(BACKENDS)}"
        ) from None
