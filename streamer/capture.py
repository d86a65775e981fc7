"""Live capture from a sound device (PortAudio through ``sounddevice``).

The PortAudio callback only copies each block into a bounded queue with
``put_nowait``: it never blocks, never logs, never allocates more than the copy.
A full queue drops the block and counts it; the consumer (the streamer's main
thread) downmixes, logs the counters (rate-limited) and sends.

Device names
------------
``""``
    The system default input.
``"hw:1"``, ``"hw:1,0"``
    ALSA card (and device, default 0): the PortAudio device whose name contains
    ``"(hw:1,0)"``.
``"3"``
    A PortAudio device index (see ``python -m streamer --list-devices``).
``"pulse:NAME"``, or a PulseAudio/PipeWire source name such as ``"v.monitor"``
    A source of the sound server (a sink's ``.monitor`` included), captured
    through FFmpeg's ``pulse`` input (:func:`open_device`), so that no
    ``pactl`` or ``PULSE_SOURCE`` is needed to pick it.  The names are those
    :func:`list_sound_server_sources` reports (``--list-devices`` prints them);
    PipeWire answers as PulseAudio through ``pipewire-pulse``.
anything else
    Matched by ``sounddevice`` against the input devices' names (substrings,
    case-insensitive), e.g. ``"pulse"`` or ``"USB Audio"``.

A device that disappears mid-capture (unplugged USB interface, sound server
restart) is noticed when no block arrives for a few seconds or PortAudio stops
the stream; the source logs an error, closes the stream and tries to reopen the
same device name every ``retry_seconds`` (re-scanning PortAudio's device list),
resuming when it is back.  Sequence numbers skip the blocks lost meanwhile, so
the worker sees a gap.  This is best effort: PortAudio's ALSA backend may not
notice a re-plugged card until it re-scans, and a device that changes index or
name may not be found again.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np

import protocol
from model.audio import to_mono
from streamer.core import Block, Source
from tagstream.errors import TagstreamError, UnavailableError, UsageError

__all__ = [
    "PULSE_PREFIX",
    "DeviceSource",
    "InputDevice",
    "ServerSource",
    "list_input_devices",
    "list_sound_server_sources",
    "match_device",
    "open_device",
    "resolve_device",
]

logger = logging.getLogger(__name__)

_ALSA_HW = re.compile(r"hw:(\d+)(?:,(\d+))?")
#: ``--device pulse:NAME`` names a PulseAudio/PipeWire source outright.
PULSE_PREFIX = "pulse:"
#: A line of ``ffmpeg -sources pulse``: ``* name [description] (media types)``.
_PULSE_LINE = re.compile(r"^([* ]) (\S+) \[(.*)\](?: \(.*\))?$")
#: Seconds the sound server may take to list its sources.
_LIST_TIMEOUT_S = 10.0
#: Least seconds between two log lines about dropped blocks or overflows.
_DROP_LOG_INTERVAL_S = 5.0


def _sounddevice() -> ModuleType:
    """Import ``sounddevice``, turning a missing PortAudio into a one-line error."""
    try:
        import sounddevice
    except OSError as exc:
        raise TagstreamError(
            f"cannot load PortAudio ({exc}); install it, e.g. apt-get install libportaudio2"
        ) from None
    module: ModuleType = sounddevice
    return module


@dataclasses.dataclass(frozen=True)
class InputDevice:
    """An input device as PortAudio reports it."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    default_sample_rate: float
    is_default: bool = False


def list_input_devices() -> list[InputDevice]:
    """Return every PortAudio device that has input channels.

    Raises
    ------
    tagstream.errors.TagstreamError
        If PortAudio cannot be loaded.
    """
    sd = _sounddevice()
    host_apis = sd.query_hostapis()
    try:
        default_input = int(sd.default.device[0])
    except (TypeError, ValueError):
        default_input = -1
    devices = []
    for info in sd.query_devices():
        if int(info["max_input_channels"]) <= 0:
            continue
        devices.append(
            InputDevice(
                index=int(info["index"]),
                name=str(info["name"]),
                host_api=str(host_apis[int(info["hostapi"])]["name"]),
                max_input_channels=int(info["max_input_channels"]),
                default_sample_rate=float(info["default_samplerate"]),
                is_default=int(info["index"]) == default_input,
            )
        )
    return devices


def _no_match(spec: str) -> UnavailableError:
    return UnavailableError(
        f"no input device matches {spec!r}; list them with python -m streamer --list-devices"
    )


def match_device(spec: str, devices: Sequence[InputDevice]) -> int | None:
    """Find an input device by index or ALSA ``hw:`` name among ``devices``.

    Parameters
    ----------
    spec : str
        ``"3"`` (index) or ``"hw:CARD[,DEV]"``; other names return ``None``
        (left to ``sounddevice``'s substring matching).
    devices : sequence of InputDevice
        From :func:`list_input_devices`.

    Returns
    -------
    int or None
        The PortAudio index, or ``None`` if ``spec`` is neither form.

    Raises
    ------
    tagstream.errors.UnavailableError
        If ``spec`` has one of those forms but no input device fits.
    """
    spec = spec.strip()
    if spec.isdigit():
        index = int(spec)
        if any(device.index == index for device in devices):
            return index
        raise _no_match(spec)
    match = _ALSA_HW.fullmatch(spec)
    if match is None:
        return None
    card, dev = match.group(1), match.group(2) or "0"
    wanted = f"(hw:{card},{dev})"
    for device in devices:
        if wanted in device.name:
            return device.index
    raise _no_match(spec)


def resolve_device(spec: str) -> InputDevice:
    """Resolve a ``--device`` value to one input device (see the module docstring).

    Raises
    ------
    tagstream.errors.UnavailableError
        With a one-line message when nothing (or more than one device)
        matches, or there is no default input.
    """
    sd = _sounddevice()
    devices = list_input_devices()
    by_index = {device.index: device for device in devices}
    if not spec:
        for device in devices:
            if device.is_default:
                return device
        raise UnavailableError(
            "no default input device; pick one with --device "
            "(list them with python -m streamer --list-devices)"
        )
    index = match_device(spec, devices)
    if index is None:
        try:
            info = sd.query_devices(spec, kind="input")
        except ValueError as exc:
            if "Multiple" in str(exc):
                raise UnavailableError(
                    f"several input devices match {spec!r}; give an index or a longer name "
                    "(python -m streamer --list-devices)"
                ) from None
            raise _no_match(spec) from None
        index = int(info["index"])
    if index not in by_index:
        raise _no_match(spec)
    return by_index[index]


@dataclasses.dataclass(frozen=True)
class ServerSource:
    """A PulseAudio/PipeWire source (a microphone, a line input or a sink's monitor)."""

    name: str
    description: str
    is_default: bool = False


def list_sound_server_sources(*, ffmpeg: str = "ffmpeg") -> list[ServerSource]:
    """The sources of the PulseAudio (or PipeWire) server, as FFmpeg's ``pulse`` input sees them.

    Returns an empty list when ffmpeg is missing or no sound server answers: a
    machine without one simply has no such sources.
    """
    program = shutil.which(ffmpeg)
    if program is None:
        return []
    try:
        listed = subprocess.run(
            [program, "-hide_banner", "-sources", "pulse"],
            capture_output=True,
            text=True,
            timeout=_LIST_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("cannot list the sound server's sources error=%s", exc)
        return []
    sources = []
    for line in listed.stdout.splitlines():
        match = _PULSE_LINE.match(line)
        if match is not None:
            mark, name, description = match.groups()
            sources.append(ServerSource(name, description, is_default=mark == "*"))
    return sources


def open_device(
    spec: str,
    *,
    sample_rate: int = 0,
    channels: int = 0,
    block_seconds: float = 0.1,
    queue_blocks: int = 100,
    retry_seconds: float = 3.0,
) -> Source:
    """The source for a ``--device`` value: a sound server's source, or a PortAudio device.

    ``"pulse:NAME"`` and any name that the PulseAudio/PipeWire server lists as a source
    (:func:`list_sound_server_sources`, e.g. ``"v.monitor"``) are captured through
    FFmpeg's ``pulse`` input (:class:`streamer.network.NetworkSource` with
    ``input_format="pulse"``: mono float32 at ``sample_rate``, 16 kHz when 0; it
    reconnects when the server goes and comes back).  Everything else (``""``, an
    index, ``hw:1``, ``"pulse"``, part of a device name) is a :class:`DeviceSource`.

    Raises
    ------
    tagstream.errors.UnavailableError
        No such device or source, or ffmpeg missing for a ``pulse:`` source.
    tagstream.errors.UsageError
        A setting is out of range.
    """
    name = spec.strip()
    server_source = name[len(PULSE_PREFIX) :] if name.startswith(PULSE_PREFIX) else None
    portaudio_form = not name or name.isdigit() or _ALSA_HW.fullmatch(name) is not None
    if (
        server_source is None
        and not portaudio_form
        and name != "pulse"
        and any(source.name == name for source in list_sound_server_sources())
    ):
        server_source = name
    if server_source is None:
        return DeviceSource(
            spec,
            sample_rate=sample_rate,
            channels=channels,
            block_seconds=block_seconds,
            queue_blocks=queue_blocks,
            retry_seconds=retry_seconds,
        )
    known = list_sound_server_sources()
    if not any(source.name == server_source for source in known):
        raise UnavailableError(
            f"no PulseAudio/PipeWire source named {server_source!r} "
            f"(sources: {', '.join(s.name for s in known) or 'none, or no sound server'}); "
            "list them with python -m streamer --list-devices"
        )
    if channels:
        logger.warning("channels is ignored for a sound server source: captured as mono")
    from streamer.network import NetworkSource

    rate = sample_rate or 16000
    return NetworkSource(
        server_source,
        input_format="pulse",
        # The server resamples and downmixes; 20 ms fragments keep the latency low.
        input_options=[
            *("-sample_rate", str(rate), "-channels", "1"),
            *("-fragment_size", str(max(64, rate * 2 // 50))),  # bytes of s16 mono
        ],
        sample_rate=rate,
        block_seconds=block_seconds,
        stall_timeout_s=max(2.0, 10 * block_seconds),
        backoff_initial_s=retry_seconds,
        backoff_max_s=max(retry_seconds, 30.0),
    )


class DeviceSource:
    """Live blocks from a sound device.

    Parameters
    ----------
    device : str
        Device name, ALSA ``hw:`` name or index; ``""`` = the default input.
    sample_rate : int >= 0
        Capture rate in Hz; 0 = the device's default rate.
    channels : int >= 0
        Channels to capture (downmixed to mono); 0 = 1.
    block_seconds : float > 0
        Seconds of audio per block.
    queue_blocks : int > 0
        Capacity of the queue between the audio callback and the sender.
    retry_seconds : float > 0
        Seconds between attempts to reopen a device that disappeared.
    stall_seconds : float or None
        No block for this long means the device is gone; default
        ``max(2, 10 * block_seconds)``.

    Raises
    ------
    tagstream.errors.UnavailableError
        If the device does not exist or cannot be opened.
    tagstream.errors.UsageError
        If the sample rate is outside the protocol's range.

    Notes
    -----
    The device is resolved and opened by the constructor, so a wrong name fails
    before anything is sent.
    """

    live = True

    def __init__(
        self,
        device: str = "",
        *,
        sample_rate: int = 0,
        channels: int = 0,
        block_seconds: float = 0.1,
        queue_blocks: int = 100,
        retry_seconds: float = 3.0,
        stall_seconds: float | None = None,
    ) -> None:
        self._sd = _sounddevice()
        self.device = device
        self.name = device or "default"
        self.requested_sample_rate = sample_rate
        self.channels = channels or 1
        self.block_seconds = block_seconds
        self.retry_seconds = retry_seconds
        self.stall_seconds = stall_seconds or max(2.0, 10 * block_seconds)
        self._queue: queue.Queue[tuple[int, float, np.ndarray]] = queue.Queue(queue_blocks)
        self._stream: Any = None
        self._lock = threading.Lock()
        # Written only by the audio callback (and by _open before the stream starts).
        self._next_index = 0
        self.dropped_queue = 0
        self.overflows = 0
        self.reopens = 0
        self.sample_rate = 0
        self._open()

    # -- lifecycle -------------------------------------------------------------------

    def _open(self) -> None:
        sd = self._sd
        info = resolve_device(self.device)
        rate = self.requested_sample_rate or round(info.default_sample_rate)
        if not protocol.MIN_SAMPLE_RATE <= rate <= protocol.MAX_SAMPLE_RATE:
            raise UsageError(
                f"sample rate {rate} Hz is outside "
                f"{protocol.MIN_SAMPLE_RATE}..{protocol.MAX_SAMPLE_RATE}"
            )
        block_frames = max(1, round(self.block_seconds * rate))
        self.sample_rate = rate  # read by the callback
        try:
            stream = sd.InputStream(
                device=info.index,
                samplerate=rate,
                channels=self.channels,
                dtype="float32",
                blocksize=block_frames,
                callback=self._callback,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise UnavailableError(
                f"cannot open input device {self.name!r} ({info.name}) at {rate} Hz, "
                f"{self.channels} channel(s): {exc}"
            ) from None
        self._stream = stream
        logger.info(
            "capturing device=%r index=%d name=%r sample_rate=%d channels=%d block_frames=%d "
            "latency_s=%.3f",
            self.device,
            info.index,
            info.name,
            rate,
            self.channels,
            block_frames,
            float(stream.latency),
        )

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception as exc:  # a vanished device fails in many ways
                logger.debug("closing stream failed error=%s", exc)

    def close(self) -> None:
        """Stop capturing; safe to call twice."""
        self._close_stream()

    # -- audio thread ----------------------------------------------------------------

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio callback: copy the block into the queue, never block."""
        index = self._next_index
        self._next_index = index + 1
        if status.input_overflow:
            self.overflows += 1
        now = time.time()
        age = float(time_info.currentTime) - float(time_info.inputBufferAdcTime)
        if not 0.0 <= age < 10.0 or time_info.inputBufferAdcTime <= 0:
            # Host APIs that report no ADC time: assume the block just completed.
            age = frames / self.sample_rate
        try:
            self._queue.put_nowait((index, now - age, indata.copy()))
        except queue.Full:
            self.dropped_queue += 1

    # -- consumer side ---------------------------------------------------------------

    def status_fields(self) -> dict[str, int]:
        return {
            "queue": self._queue.qsize(),
            "dropped_queue": self.dropped_queue,
            "overflows": self.overflows,
            "reopens": self.reopens,
        }

    def blocks(self, stop: threading.Event) -> Iterator[Block]:
        """Yield captured blocks until ``stop`` is set, reopening a vanished device."""
        last_block = time.monotonic()
        logged_drops = (0, 0)
        last_drop_log = float("-inf")
        while not stop.is_set():
            try:
                index, capture_time, data = self._queue.get(timeout=0.1)
            except queue.Empty:
                stream = self._stream
                gone = stream is None or not stream.active
                if gone or time.monotonic() - last_block > self.stall_seconds:
                    self._recover(stop, since=last_block)
                    last_block = time.monotonic()
                continue
            last_block = time.monotonic()
            drops = (self.dropped_queue, self.overflows)
            if drops != logged_drops and last_block - last_drop_log >= _DROP_LOG_INTERVAL_S:
                logger.warning(
                    "capture losing audio dropped_queue=%d overflows=%d queue=%d",
                    drops[0],
                    drops[1],
                    self._queue.qsize(),
                )
                logged_drops, last_drop_log = drops, last_block
            yield Block(
                index=index,
                samples=np.ascontiguousarray(to_mono(data)),
                sample_rate=self.sample_rate,
                capture_time=capture_time,
            )

    def _recover(self, stop: threading.Event, *, since: float) -> None:
        """Close the dead stream and retry opening the device until it works or ``stop``."""
        logger.error(
            "input device stopped delivering audio device=%r silent_s=%.1f; retrying every %.0f s",
            self.name,
            time.monotonic() - since,
            self.retry_seconds,
        )
        self._close_stream()
        while not stop.wait(self.retry_seconds):
            try:
                self._sd._terminate()  # re-scan: PortAudio caches the device list
                self._sd._initialize()
            except Exception as exc:  # best effort, retried below
                logger.debug("PortAudio re-initialisation failed error=%s", exc)
            lost_blocks = round((time.monotonic() - since) / self.block_seconds)
            # Skip the lost blocks' numbers so the worker sees the gap.
            self._next_index += lost_blocks
            try:
                self._open()
            except TagstreamError as exc:
                self._next_index -= lost_blocks
                logger.warning("input device still unavailable device=%r error=%s", self.name, exc)
                continue
            self.reopens += 1
            logger.info("input device back device=%r reopens=%d", self.name, self.reopens)
            return
