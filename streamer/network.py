"""Network streams as a source: Icecast/Shoutcast HTTP(S), HLS and whatever FFmpeg opens.

:class:`NetworkSource` implements the streamer's :class:`streamer.core.Source`
protocol for a URL.  Its audio is decoded by Debian's ``ffmpeg`` program, run as
a subprocess per connection that writes mono float32 PCM at a fixed rate to a
pipe (``-f f32le -ac 1 -ar RATE pipe:1``)::

    live HTTP (Icecast, Shoutcast):  socket -> ICY metadata stripped here -> ffmpeg stdin
    HLS, static files, rtsp/srt/rtmp: ffmpeg reads the URL itself
                                      ffmpeg stdout -> fixed-size Blocks -> Streamer

Why a subprocess and not PyAV
-----------------------------
``python -m benchmarks.network_decode`` decodes the same 128 kbit/s mp3, served
like an Icecast mount, three ways.  On this project's machine (AMD EPYC, 2
cores; Debian's ffmpeg 5.1, PyAV 18.1), CPU per real-time stream (``--realtime``):

==========================================  ============  ======
path                                         % of a core   ratio
==========================================  ============  ======
ffmpeg subprocess, ICY read here (stations)      0.85       1.00
ffmpeg subprocess reading the URL (HLS, files)   0.70       0.83
PyAV in-process                                  0.65       0.76
==========================================  ============  ======

PyAV is a quarter cheaper (0.2 % of a core per stream: about 150 streams per
core instead of 120 for the decoding alone), and the difference is this
module's Python ICY reader and one more pipe copy, not the decoder.  The
subprocess is still the choice, because for a station monitor a wedged
decoder matters more than a fifth of a percent of a core:

* a stalled or wedged decoder is *killed*: no read inside a C library that
  cannot be interrupted, no thread left hanging, memory given back at once;
* a decoder crash on a corrupt stream ends one subprocess, not the streamer;
* it holds no GIL, so many stations decode in parallel on several cores;
* Debian's ffmpeg ships every demuxer, codec and protocol (https via GnuTLS,
  HLS, rtsp, srt, rtmp) and gets security updates through apt; PyAV's wheels
  pin their own FFmpeg build, and PyAV 19 already needs Python 3.12, so this
  project (3.11) would be held at 18.x.

The one thing FFmpeg does not hand back is ICY metadata (``StreamTitle``), so
live HTTP streams are read here, with ``Icy-MetaData: 1``: the metadata blocks
are cut out and parsed, the audio bytes go to ffmpeg's stdin.

Pacing
------
A live stream (Icecast, Shoutcast, live HLS, rtsp, ...) is paced by the network:
blocks are yielded as they are decoded.  A static URL (a file over HTTP, a VOD
HLS playlist ending in ``#EXT-X-ENDLIST``) is paced to real time on an absolute
schedule, like :class:`streamer.files.FileSource`, unless ``fast=True``.

Reconnects and gaps
-------------------
Any end of a live stream, any decoder or network error, and a *stall* (no
decoded audio for ``stall_timeout_s``) close the connection; the source waits
``backoff_initial_s``, doubling up to ``backoff_max_s``, and connects again,
for ever unless ``max_attempts`` is set.  Each drop, failed attempt, stall and
reconnect is counted (:meth:`NetworkSource.status_fields`) and logged, and a
``source_down`` / ``source_up`` :class:`SourceEvent` is emitted.

Blocks after a reconnect never pretend continuity.  The wire already has the
means: a block's ``index`` becomes the message ``seq``, and a skipped ``seq``
is a gap to the worker (filled with silence up to its ``max_gap_seconds``,
otherwise the window is reset; never with old audio).  So the first block
after an outage of a live stream jumps its index by the outage in blocks (at
least one), measured on the wall clock.  All blocks have exactly
``block_seconds`` of audio (the partial block in hand at a drop is discarded
as part of the outage), so block ``i`` starts at ``i * block_seconds`` on the
same audio timeline the worker keeps.  A static stream resumes where it
stopped (``ffmpeg -ss``): nothing is lost, so its index does not jump.  An HLS
playlist resumes just inside the segment before the position and cuts the rest
after decoding (:func:`resume_options`): FFmpeg's HLS demuxer
seeks to a segment's start, so a plain ``-ss`` would send up to one segment twice.

Titles
------
ICY ``StreamTitle`` values are read as they change and emitted as
``now_playing`` events with ``at_s``, the audio position where the change
arrived: the byte offset of the metadata block in the connection divided by
the stream's byte rate (``icy-br``, else the bit rate ffmpeg reports, else
the rate observed so far), added to the position at which the connection's
audio began.  Exact for constant bit-rate streams.  The first title of a
connection applies from its start, and is not emitted again when a reconnect
finds the same title.

HLS titles are ID3 tags (:mod:`streamer.id3`).  In MPEG-TS segments they form a
timed-metadata stream: the ffmpeg of an HLS connection copies it, with the
first audio stream, as MPEG-TS to a second pipe, read beside the audio, and a
title is placed at its PTS minus that of the first audio packet, exactly (it
may reach the loop a few blocks after its position).  In packed-audio segments
(``.aac``, ``.mp3``) each segment starts with a tag that FFmpeg drops after the
first: the tag alone is fetched by a ``Range`` request for each segment ffmpeg
opens, and placed by its ``PRIV`` transport-stream timestamp.
"""

from __future__ import annotations

import base64
import bisect
import collections
import contextlib
import dataclasses
import http.client
import logging
import math
import os
import queue
import re
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Final, NamedTuple

import numpy as np

import protocol
from streamer.core import Block
from streamer.id3 import (
    PTS_HZ,
    TimedId3Reader,
    id3_tag_size,
    parse_id3_title,
    pts_difference_s,
    transport_stream_timestamp,
)
from tagstream.errors import UnavailableError, UsageError

__all__ = [
    "EVENT_KINDS",
    "NetworkSource",
    "SourceEvent",
    "parse_stream_title",
    "station_list_urls",
]

logger = logging.getLogger(__name__)

#: Kinds of :class:`SourceEvent`.
EVENT_KINDS: Final = ("source_down", "source_up", "now_playing")
#: URL schemes that FFmpeg reads and that are taken as live without asking.
_LIVE_SCHEMES: Final = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "rtp", "tcp")
_HTTP_SCHEMES: Final = ("http", "https")
_MAX_REDIRECTS: Final = 5
#: Largest playlist read when probing an HLS URL.
_MAX_PLAYLIST_BYTES: Final = 1024 * 1024
#: A resumed HLS playlist is sought this far into a segment that starts at least
#: ``_RESUME_BEFORE_S`` before the position; the decoded audio up to the position is cut.
_RESUME_INTO_SEGMENT_S: Final = 0.05
_RESUME_BEFORE_S: Final = 0.5
#: Largest station playlist (``.pls``, ``.m3u``) read.
_MAX_STATION_LIST_BYTES: Final = 64 * 1024
#: Bytes read from the network per call.
_READ_BYTES: Final = 16 * 1024
#: Longest wait of one read before the stop flag is checked again.
_POLL_S: Final = 0.2
#: A connection that delivered this much audio resets the backoff to its initial value.
_STABLE_AFTER_S: Final = 10.0
_USER_AGENT: Final = "tagstream/0.1 (+network source)"
_BITRATE_RE: Final = re.compile(rb"Stream #\d+:\d+.*?: Audio: .*?(\d+) kb/s")
#: ffmpeg's ``-loglevel level+...`` tag, and the ``[name @ 0x...]`` context before it.
_LEVEL_RE: Final = re.compile(rb"\[(info|warning|error|fatal|panic)\] ")
_CONTEXT_RE: Final = re.compile(rb"\[(\w+) @ 0x[0-9a-f]+\] ")
#: Contexts whose errors mean the input failed (not one bad frame of the audio).
_INPUT_CONTEXTS: Final = frozenset(
    {b"http", b"https", b"tcp", b"tls", b"hls", b"rtsp", b"rtmp", b"srt", b"udp", b"crypto"}
)
#: FFmpeg's http at the end of a body sent without a length: "should be" the unknown size
#: (UINT64_MAX).  That is how such a body ends, not an error.
_UNSIZED_END_RE: Final = re.compile(
    rb"Stream ends prematurely at \d+, should be 18446744073709551615"
)
#: Packed-audio HLS segments (RFC 8216 section 3.4: ADTS AAC, MP3, AC-3, E-AC-3), each with an
#: ID3 tag in front; FFmpeg logs the segments it opens, and drops a tag that differs from the first.
_PACKED_AUDIO_EXTENSIONS: Final = (".aac", ".mp3", ".ac3", ".ec3")
_OPENING_RE: Final = re.compile(rb"\[hls @ 0x[0-9a-f]+\] \[info\] Opening '(.+)' for reading")
#: At the end of an HLS decoder's output, how long its last titles are waited for.
_DRAIN_TITLES_S: Final = 2.0
#: Bytes of a packed segment asked for first (a title tag is far smaller); at most this much more.
_ID3_HEAD_BYTES: Final = 4096
_MAX_ID3_BYTES: Final = 256 * 1024
#: The second output of an HLS decoder: its first audio stream and the first variant's data
#: streams (timed ID3) copied with their timestamps as MPEG-TS, for :class:`TimedId3Reader`.
_TIMED_ID3_OUTPUT: Final = (
    *("-map", "0:a:0", "-map", "0:p:0:d?", "-c", "copy"),
    *("-f", "mpegts", "-flush_packets", "1"),
)


@dataclasses.dataclass(frozen=True)
class SourceEvent:
    """Something that happened to a network source at a moment of its audio.

    Parameters
    ----------
    kind : {"source_down", "source_up", "now_playing"}
        What happened.
    time : float
        Unix time at which it was noticed.
    at_s : float >= 0
        Audio position, in seconds on the block timeline (block ``i`` starts at
        ``i * block_seconds``): where the audio stopped (``source_down``),
        where it resumed (``source_up``) or where the title changed (``now_playing``).
    title : str
        ``now_playing`` only: the new ``StreamTitle``.
    reason : str
        ``source_down`` only: why, e.g. ``"end of stream"``, ``"stall: no audio for 10.0 s"``.
    outage_s : float
        ``source_up`` only: wall-clock seconds without audio.
    """

    kind: str
    time: float
    at_s: float
    title: str = ""
    reason: str = ""
    outage_s: float = 0.0


def parse_stream_title(metadata: bytes) -> str | None:
    """The ``StreamTitle`` of one ICY metadata block, or ``None`` if it has none.

    Parameters
    ----------
    metadata : bytes
        The block without its length byte, NUL padding allowed, e.g.
        ``b"StreamTitle='Artist - Song';StreamUrl='';"``.

    Returns
    -------
    str or None
        The title (UTF-8, else Latin-1), possibly empty.

    Examples
    --------
    >>> parse_stream_title(b"StreamTitle='It\\'s - A';StreamUrl='x';\\0\\0")
    "It's - A"
    """
    text = metadata.rstrip(b"\0")
    start = text.find(b"StreamTitle='")
    if start < 0:
        return None
    start += len(b"StreamTitle='")
    # The value ends at the "';" before the next key or the end (titles may hold quotes).
    end = -1
    for match in re.finditer(rb"';", text[start:]):
        after = text[start + match.end() :]
        if not after.strip() or re.match(rb"\s*[A-Za-z]+=", after):
            end = start + match.start()
            break
    value = text[start:end] if end >= 0 else text[start:].rstrip(b"';")
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return value.decode("latin-1").strip()


class _Pace(NamedTuple):
    """Real-time schedule of a static stream: block frames ``origin_frames`` were due at start."""

    start_mono: float
    start_unix: float
    origin_frames: int


class _ConnectError(UnavailableError):
    """One connection attempt failed; the message is the reason logged."""


# ---------------------------------------------------------------------------
# HTTP with ICY: Shoutcast v1 answers "ICY 200 OK", which http.client refuses.
# ---------------------------------------------------------------------------


class _IcyStatusReader:
    """A response file whose first line ``ICY 200 OK`` reads as ``HTTP/1.0 200 OK``."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._first = True

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._raw.readline(limit)
        if self._first:
            self._first = False
            if line.startswith(b"ICY "):
                line = b"HTTP/1.0 " + line[4:]
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _IcyResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = _IcyStatusReader(self.fp)  # type: ignore[assignment]


class _HTTPConnection(http.client.HTTPConnection):
    response_class = _IcyResponse


class _HTTPSConnection(http.client.HTTPSConnection):
    response_class = _IcyResponse


@dataclasses.dataclass
class _Response:
    """An open HTTP response and the socket under it (to abort a blocked read)."""

    url: str
    response: http.client.HTTPResponse
    sock: socket.socket | None

    def header(self, name: str) -> str:
        return self.response.getheader(name) or ""

    def abort(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.response.close()


def _open_http(
    url: str, *, timeout_s: float, icy: bool = True, first_bytes: int | None = None
) -> _Response:
    """GET ``url`` (following redirects); raise :class:`_ConnectError` on any failure.

    ``first_bytes`` asks for that many bytes from the start (``Range``); a server that
    ignores it answers 200 with the whole body, of which the caller reads what it needs.
    """
    for _ in range(_MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in _HTTP_SCHEMES or not parts.hostname:
            raise _ConnectError(f"not an http(s) URL: {url}")
        connection: http.client.HTTPConnection
        try:
            port = parts.port
        except ValueError:
            raise _ConnectError(f"bad port in {url}") from None
        if parts.scheme == "https":
            connection = _HTTPSConnection(
                parts.hostname, port, timeout=timeout_s, context=ssl.create_default_context()
            )
        else:
            connection = _HTTPConnection(parts.hostname, port, timeout=timeout_s)
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        headers = {"User-Agent": _USER_AGENT, "Accept": "*/*"}
        if icy:
            headers["Icy-MetaData"] = "1"
        if first_bytes is not None:
            headers["Range"] = f"bytes=0-{first_bytes - 1}"
        if parts.username is not None:
            credentials = f"{parts.username}:{parts.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        try:
            connection.request("GET", path, headers=headers)
            sock = connection.sock
            response = connection.getresponse()
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise _ConnectError(
                f"the server's TLS certificate is not trusted ({exc.verify_message}); for a "
                "private CA or a self-signed certificate set SSL_CERT_FILE to its PEM file"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise _ConnectError(f"cannot connect: {type(exc).__name__}: {exc}") from None
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location")
            response.close()
            connection.close()
            if not location:
                raise _ConnectError(f"HTTP {response.status} without a Location")
            url = urllib.parse.urljoin(url, location)
            continue
        if response.status != 200 and not (first_bytes is not None and response.status == 206):
            response.close()
            connection.close()
            raise _ConnectError(f"HTTP {response.status} {response.reason}".strip())
        return _Response(url=url, response=response, sock=sock)
    raise _ConnectError(f"more than {_MAX_REDIRECTS} redirects")


def station_list_urls(text: str) -> list[str]:
    """The stream URLs a station playlist names, in its order.

    A station playlist is what a station's "listen" link often gives: a ``.pls``
    (``[playlist]`` with ``File1=URL``...) or a plain ``.m3u`` (one URL a line,
    ``#EXTM3U``/``#EXTINF`` comments).  Empty for anything else, an HLS playlist
    (``#EXT-X-`` tags) included: that one is the stream.
    """
    lines = [line.strip() for line in text.splitlines()]
    if any(line.upper().startswith("#EXT-X-") for line in lines):
        return []
    if any(line.lower() == "[playlist]" for line in lines):
        numbered = []
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key.lower().startswith("file") and key[4:].strip().isdigit():
                numbered.append((int(key[4:]), value.strip()))
        candidates = [value for _, value in sorted(numbered)]
    else:
        candidates = [line for line in lines if line and not line.startswith("#")]
    return [url for url in candidates if _is_stream_url(url)]


def _is_stream_url(text: str) -> bool:
    parts = urllib.parse.urlsplit(text)
    return parts.scheme.lower() in _HTTP_SCHEMES and bool(parts.netloc)


def _resolve_station_list(url: str, *, timeout_s: float) -> str:
    """The first stream a ``.pls``/``.m3u`` station playlist at ``url`` names, else ``url``."""
    shown = _without_password(url)
    try:
        opened = _open_http(url, timeout_s=timeout_s, icy=False)
        try:
            text = opened.response.read(_MAX_STATION_LIST_BYTES).decode("utf-8", "replace")
        finally:
            opened.abort()
    except (_ConnectError, OSError, http.client.HTTPException) as exc:
        raise UnavailableError(
            f"cannot read the station playlist {shown}: {exc}; check the URL"
        ) from None
    if any(line.strip().upper().startswith("#EXT-X-") for line in text.splitlines()):
        return url  # an HLS playlist: the stream itself
    urls = station_list_urls(text)
    if not urls:
        raise UsageError(
            f"the station playlist {shown} names no http(s) stream; give the stream's URL"
        )
    logger.info(
        "station playlist url=%s streams=%d following=%s",
        shown,
        len(urls),
        _without_password(urls[0]),
    )
    return urls[0]


def _is_playlist(url: str, content_type: str) -> bool:
    path = urllib.parse.urlsplit(url).path.lower()
    return path.endswith((".m3u8", ".m3u")) or "mpegurl" in content_type.lower()


def _media_playlist(url: str, text: str, *, timeout_s: float) -> str:
    """The media playlist of an HLS playlist: ``text`` itself, or a master's first variant's."""
    if "#EXT-X-STREAM-INF" not in text:
        return text
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF"):
            for candidate in lines[number + 1 :]:
                if candidate.strip() and not candidate.startswith("#"):
                    variant = urllib.parse.urljoin(url, candidate.strip())
                    opened = _open_http(variant, timeout_s=timeout_s, icy=False)
                    try:
                        body = opened.response.read(_MAX_PLAYLIST_BYTES)
                    finally:
                        opened.abort()
                    return body.decode("utf-8", "replace")
    return text


def _vod_starts(media: str) -> tuple[float, ...] | None:
    """A media playlist's segment starts (:func:`segment_starts`) if it ends
    (``#EXT-X-ENDLIST``: VOD), else ``None``: a live playlist slides, it has no positions."""
    return segment_starts(media) if "#EXT-X-ENDLIST" in media else None


def decoded_audio_options(sample_rate: int) -> list[str]:
    """FFmpeg's output options for what a source reads: the first audio stream as mono
    float32 at ``sample_rate``."""
    return [
        *("-vn", "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le"),
        *("-ac", "1", "-ar", str(sample_rate)),
    ]


def resume_options(starts: Sequence[float], resume_s: float) -> tuple[list[str], float]:
    """(``-ss`` before the input, seconds of decoded audio to cut) to resume at ``resume_s``.

    FFmpeg 5.1's HLS demuxer seeks to the start of the segment that holds the
    position (``-ss 5`` on 2 s segments decodes from 4.04 s), so a plain ``-ss``
    would send up to one segment again.  With the playlist's segment ``starts``
    (:func:`segment_starts`), the input is sought :data:`_RESUME_INTO_SEGMENT_S` into
    a segment that starts at least :data:`_RESUME_BEFORE_S` before the position, and
    the audio up to the position is cut after decoding (``atrim``, on the decoded
    timestamps), whether the demuxer seeks to the segment or to the position: to
    within a sample, except in a playlist's first half second, where the decoded
    timestamps run one AAC frame off and 27 ms come twice (``benchmarks/hls_resume.py``).
    Without ``starts`` (other static streams, which seek exactly; a playlist that
    cannot be read), a plain ``-ss``.
    """
    if starts:
        k = max(0, bisect.bisect_right(starts, resume_s - _RESUME_BEFORE_S) - 1)
        into_s = starts[k] + _RESUME_INTO_SEGMENT_S
        if into_s < resume_s:
            return ["-ss", f"{into_s:.6f}"], resume_s - into_s
    return ["-ss", f"{resume_s:.6f}"], 0.0


def segment_starts(text: str) -> tuple[float, ...]:
    """Where each segment of an HLS media playlist starts, in seconds: its ``#EXTINF``
    durations added up.  Empty when a duration is missing or not a number."""
    starts: list[float] = []
    position = 0.0
    for line in text.splitlines():
        if not line.strip().upper().startswith("#EXTINF:"):
            continue
        value = line.strip()[len("#EXTINF:") :].split(",", 1)[0].strip()
        try:
            duration = float(value)
        except ValueError:
            return ()
        if not (math.isfinite(duration) and duration >= 0):
            return ()
        starts.append(position)
        position += duration
    return tuple(starts)


def _fetch_id3_tag(url: str, *, timeout_s: float) -> bytes | None:
    """The ID3 tag in front of a packed-audio segment, fetched by its first bytes only."""
    want = _ID3_HEAD_BYTES
    for _ in range(2):  # the head, then the whole tag if the head was too short
        opened = _open_http(url, timeout_s=timeout_s, icy=False, first_bytes=want)
        try:
            head = opened.response.read(want)
        finally:
            opened.abort()
        size = id3_tag_size(head)
        if size is None or size > _MAX_ID3_BYTES:
            return None
        if size <= len(head):
            return head[:size]
        if len(head) < want:
            return None  # the body ended inside the tag
        want = size
    return None


class _PackedAudioTitles:
    """Titles of packed-audio HLS segments, from the ID3 tag in front of each.

    FFmpeg 5.1 reads the first segment's tag into the stream's metadata and drops the
    later ones (``Changing ID3 metadata in HLS audio elementary stream is not
    implemented``).  It does log each segment it opens; for each packed-audio segment
    this fetches the tag alone (a ``Range`` request for its first bytes) in a thread of
    its own and places the title at the segment's ``PRIV``
    ``com.apple.streaming.transportStreamTimestamp`` minus that of the first segment
    opened, where the decoded audio starts.  A tag without that timestamp has no place
    and is skipped.  A connection resumed with ``-ss`` decodes from the position itself
    (FFmpeg's seek in packed audio is exact to about 20 ms, unlike in MPEG-TS segments),
    so its origin is given: the stream's first timestamp plus the position.  Its tags
    from before the position are left out: FFmpeg opens the first segment again to
    probe the stream, and what played at the position was named before the drop.
    """

    def __init__(
        self,
        on_title: Callable[[float, str], None],
        *,
        timeout_s: float,
        origin_pts: int | None = None,
    ) -> None:
        self._on_title = on_title
        self._timeout_s = timeout_s
        self._urls: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._origin_pts = origin_pts
        self._resumed = origin_pts is not None
        self._first = True
        #: The timestamp of the first segment opened (``None`` until read, or without one).
        self.first_pts: int | None = None

    def segment_opened(self, url: str) -> None:
        """FFmpeg opened ``url``; take its title if it is a packed-audio segment."""
        if not urllib.parse.urlsplit(url).path.lower().endswith(_PACKED_AUDIO_EXTENSIONS):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="network-id3", daemon=True)
            self._thread.start()
        self._urls.put(url)

    def finish(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the tags of the segments opened so far."""
        if self._thread is not None:
            self._urls.put(None)
            self._thread.join(timeout=timeout_s)

    def close(self) -> None:
        """Stop taking segments; a fetch in flight ends by its own timeout (daemon thread)."""
        self.finish(_POLL_S)

    def _run(self) -> None:
        while (url := self._urls.get()) is not None:
            first, self._first = self._first, False
            try:
                tag = _fetch_id3_tag(url, timeout_s=self._timeout_s)
            except (_ConnectError, OSError, http.client.HTTPException) as exc:
                logger.debug("segment tag not read url=%s error=%s", _without_password(url), exc)
                continue
            pts = transport_stream_timestamp(tag) if tag is not None else None
            if first:
                self.first_pts = pts
                if self._origin_pts is None:
                    self._origin_pts = pts  # None: no positions for this connection
            if tag is None or pts is None or self._origin_pts is None:
                continue
            title = parse_id3_title(tag)
            offset_s = pts_difference_s(pts, self._origin_pts)
            if title is not None and not (self._resumed and offset_s < 0):
                self._on_title(offset_s, title)


# ---------------------------------------------------------------------------
# One connection: an ffmpeg process, fed by an ICY reader thread or reading the URL itself.
# ---------------------------------------------------------------------------


class _Connection:
    """One decoder process and, for ICY streams, the thread that feeds it.

    ``read`` returns decoded float32 bytes, ``None`` on a timeout, ``b""`` at the end.
    """

    def __init__(
        self,
        command: list[str],
        *,
        http_response: _Response | None,
        stall_timeout_s: float,
        timed_id3: bool = False,
        packed_origin_pts: int | None = None,
        side_options: Sequence[str] = (),
    ) -> None:
        self.end_reason = ""
        #: The first error ffmpeg reported about its input ("" when none).
        self.input_error = ""
        #: The input was an HTTP body without a length, and it ended.
        self.unsized_end = False
        self._input = command[command.index("-i") + 1]
        #: (audio byte offset in this connection, title) found by the ICY reader.
        self.titles: collections.deque[tuple[int, str]] = collections.deque()
        self.titles_seen = False
        #: (seconds after this connection's first decoded sample, title) from timed ID3.
        self.timed_titles: collections.deque[tuple[float, str]] = collections.deque()
        self._timed_reader: TimedId3Reader | None = None
        self._side_fd: int | None = None
        side_write_fd: int | None = None
        self._packed: _PackedAudioTitles | None = None
        if timed_id3:
            self._side_fd, side_write_fd = os.pipe()
            command = [*command, *side_options, *_TIMED_ID3_OUTPUT, f"pipe:{side_write_fd}"]
            self._timed_reader = TimedId3Reader()
            self._packed = _PackedAudioTitles(
                lambda offset_s, title: self.timed_titles.append((offset_s, title)),
                timeout_s=stall_timeout_s,
                origin_pts=packed_origin_pts,
            )
        #: The network read timed out (the ICY reader saw no bytes for ``stall_timeout_s``).
        self.stalled = False
        self.audio_bytes = 0
        self.byte_rate = 0.0
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        self._http = http_response
        self._stall_timeout_s = stall_timeout_s
        if http_response is not None:
            bitrate = http_response.header("icy-br").split(",")[0].strip()
            if bitrate.isdigit() and int(bitrate) > 0:
                self.byte_rate = int(bitrate) * 1000 / 8
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if http_response is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=() if side_write_fd is None else (side_write_fd,),
            )
        except OSError as exc:
            if http_response is not None:
                http_response.abort()
            if self._side_fd is not None:
                os.close(self._side_fd)
            raise _ConnectError(f"cannot run {command[0]}: {exc}") from None
        finally:
            if side_write_fd is not None:
                os.close(side_write_fd)  # ffmpeg holds its own copy
        assert self._process.stdout is not None and self._process.stderr is not None
        self._stdout_fd = self._process.stdout.fileno()
        # poll, not select: a streamer following many stations has descriptors past 1024.
        self._poller = select.poll()
        self._poller.register(self._stdout_fd, select.POLLIN)
        if self._side_fd is not None:
            self._poller.register(self._side_fd, select.POLLIN)
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr,
            args=(self._process.stderr,),
            name="network-ffmpeg-log",
            daemon=True,
        )
        self._stderr_thread.start()
        self._feeder: threading.Thread | None = None
        if http_response is not None:
            self._feeder = threading.Thread(target=self._feed, name="network-icy", daemon=True)
            self._feeder.start()

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        """Keep ffmpeg's last warnings and errors; take the bit rate from its stream line.

        An error of the input (a protocol such as http, or the URL itself) is remembered
        in :attr:`input_error`: ffmpeg exits with status 0 when an HTTP body ends early.
        """
        for line in stream:
            if self._packed is not None and b"Opening '" in line:
                opening = _OPENING_RE.search(line)
                if opening is not None:
                    self._packed.segment_opened(opening.group(1).decode("utf-8", "replace"))
            if self.byte_rate == 0.0:
                match = _BITRATE_RE.search(line)
                if match and int(match.group(1)) > 0:
                    self.byte_rate = int(match.group(1)) * 1000 / 8
            level = _LEVEL_RE.search(line)
            if level is None or level.group(1) == b"info":
                continue
            text = line[level.end() :].decode("utf-8", "replace").strip()
            context = _CONTEXT_RE.match(line)
            if _UNSIZED_END_RE.search(line):
                self.unsized_end = True
                continue
            if self.unsized_end and text == f"{self._input}: Input/output error":
                continue  # ffmpeg's word for the same end
            if text:
                self._stderr_tail.append(text)
            if level.group(1) != b"warning" and (
                (context is not None and context.group(1) in _INPUT_CONTEXTS)
                or (context is None and text.startswith(self._input + ":"))
            ):
                self.input_error = self.input_error or text

    def _feed(self) -> None:
        """Read the HTTP body, cut out ICY metadata, write the audio to ffmpeg's stdin."""
        assert self._http is not None and self._process.stdin is not None
        response = self._http.response
        stdin = self._process.stdin
        metaint_text = self._http.header("icy-metaint").strip()
        metaint = int(metaint_text) if metaint_text.isdigit() else 0
        until_meta = metaint
        try:
            while True:
                want = min(_READ_BYTES, until_meta) if metaint else _READ_BYTES
                chunk = response.read1(want)
                if not chunk:
                    self.end_reason = self.end_reason or "end of stream"
                    return
                stdin.write(chunk)
                stdin.flush()
                self.audio_bytes += len(chunk)
                if metaint:
                    until_meta -= len(chunk)
                    if until_meta == 0:
                        self._read_metadata(response)
                        until_meta = metaint
        except TimeoutError:
            self.stalled = True
            self.end_reason = self.end_reason or f"stall: no data for {self._stall_timeout_s:g} s"
        except Exception as exc:
            # BrokenPipeError: ffmpeg exited (its reason is on stderr); ValueError and
            # AttributeError: close() aborted the response under a blocked read.
            self.end_reason = self.end_reason or f"read error: {type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _read_metadata(self, response: http.client.HTTPResponse) -> None:
        length_byte = response.read(1)
        if not length_byte:
            return
        length = length_byte[0] * 16
        if length == 0:
            return
        data = response.read(length)
        title = parse_stream_title(data)
        if title is not None:
            self.titles.append((self.audio_bytes, title))

    def read(self, timeout_s: float) -> bytes | None:
        if self._side_fd is None:
            if not self._poller.poll(timeout_s * 1000):
                return None
            return os.read(self._stdout_fd, 64 * 1024)
        return self._read_with_titles(timeout_s)

    def _read_with_titles(self, timeout_s: float) -> bytes | None:
        """:meth:`read` of an HLS decoder: its timed-ID3 output is read first when both have data.

        Both pipes are read by this one thread, so ffmpeg never blocks on the side output
        while the audio is awaited (and a tag comes in before the audio after it).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_s = deadline - time.monotonic()
            ready = {fd for fd, _ in self._poller.poll(max(0.0, remaining_s) * 1000)}
            if self._side_fd is not None and self._side_fd in ready:
                self._read_side(self._side_fd)
            if self._stdout_fd in ready:
                return os.read(self._stdout_fd, 64 * 1024)
            if remaining_s <= 0:
                return None

    @property
    def packed_first_pts(self) -> int | None:
        """The first packed-audio segment's timestamp, once read (``None`` otherwise)."""
        return self._packed.first_pts if self._packed is not None else None

    def drain_titles(self, timeout_s: float) -> None:
        """The audio has ended: read the titles still on their way, for up to ``timeout_s``.

        A packed segment's tag may still be being fetched (a far server answers after
        ffmpeg has read the whole segment), and the second output's last packets can
        follow the audio's end (its muxer writes what it still interleaves at the end).
        """
        deadline = time.monotonic() + timeout_s
        if self._side_fd is not None:
            with contextlib.suppress(KeyError):
                self._poller.unregister(self._stdout_fd)
        while self._side_fd is not None and (remaining_s := deadline - time.monotonic()) > 0:
            if self._poller.poll(remaining_s * 1000):
                self._read_side(self._side_fd)
        if self._packed is not None:
            self._packed.finish(max(0.0, deadline - time.monotonic()))

    def _read_side(self, fd: int) -> None:
        assert self._timed_reader is not None
        try:
            data = os.read(fd, 64 * 1024)
        except OSError:  # closed under the read: the titles end with the connection
            data = b""
        if data:
            placed = self._timed_reader.feed(data)
        else:
            placed = self._timed_reader.flush()
            self._side_fd = None
            with contextlib.suppress(KeyError):
                self._poller.unregister(fd)
            with contextlib.suppress(OSError):  # close() may have closed it already
                os.close(fd)
        for offset_s, tag in placed:
            title = parse_id3_title(tag)
            if title is not None:
                self.timed_titles.append((offset_s, title))

    def exit_code(self) -> int | None:
        try:
            return self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            return None

    def failure(self) -> str:
        """Why the connection ended, for the log line."""
        code = self._process.poll()
        tail = "; ".join(self._stderr_tail)
        reason = self.end_reason or self.input_error
        if not reason:
            reason = "end of stream" if code == 0 else f"decoder exited with status {code}"
        return f"{reason} ({tail})" if tail else reason

    def close(self) -> None:
        """Stop the decoder and the reader; safe to call twice."""
        if self._http is not None:
            self._http.abort()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdout, self._process.stdin):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._feeder is not None:
            self._feeder.join(timeout=2.0)
        if self._side_fd is not None:
            os.close(self._side_fd)
            self._side_fd = None
        self._stderr_thread.join(timeout=2.0)
        if self._packed is not None:
            self._packed.close()
        if self._process.stderr is not None:
            self._process.stderr.close()


class NetworkSource:
    """Blocks of a network stream, decoded by FFmpeg, reconnecting on any failure.

    Parameters
    ----------
    url : str
        ``http(s)://`` (Icecast, Shoutcast, a file, an HLS ``.m3u8`` playlist),
        or any URL ffmpeg reads (``rtsp://``, ``srt://``, ``rtmp://``, ...).
    sample_rate : int in [1000, 384000]
        Rate of the yielded audio in Hz; ffmpeg resamples to it (16000: the
        model's rate, so the worker does not resample).
    block_seconds : float > 0
        Seconds of audio per block; every block has exactly this many samples,
        except the last one of a static stream.
    fast : bool
        Static streams only: yield as fast as they decode instead of in real time.
    live : bool or None
        ``None``: ask the server (one request now; an unreachable URL raises).
        ``True``: take it as live (no request now: a station that is down at
        start-up is retried like a drop).  ``False``: a static file or VOD.
    stall_timeout_s : float > 0
        No decoded audio for this long counts as a drop.
    connect_timeout_s : float > 0
        Timeout of the probe request.
    backoff_initial_s, backoff_max_s : float > 0
        Wait before the first reconnect attempt, doubled after each failed one up to the cap.
    max_attempts : int > 0 or None
        Consecutive failed connection attempts before giving up (``None``: never).
    on_event : callable or None
        Called with each :class:`SourceEvent`, in the thread iterating :meth:`blocks`,
        before the block it refers to is yielded.  Events are also kept for
        :meth:`pop_events`.
    ffmpeg : str
        The ffmpeg program.
    input_format : str or None
        An ffmpeg input device instead of a URL: ``url`` is then the device's input
        name as ffmpeg takes it with ``-f input_format``, e.g. ``"pulse"`` with a
        PulseAudio/PipeWire source name (:func:`streamer.capture.open_device`).  Such
        an input is live; it reconnects like a stream when the sound server goes.
    input_options : sequence of str
        ffmpeg options put before ``-i`` for ``input_format``.

    Raises
    ------
    UsageError
        A setting is out of range.
    UnavailableError
        ffmpeg is not installed, or (with ``live=None``) the URL cannot be opened.
    """

    def __init__(
        self,
        url: str,
        *,
        sample_rate: int = 16_000,
        block_seconds: float = 0.1,
        fast: bool = False,
        live: bool | None = None,
        stall_timeout_s: float = 15.0,
        connect_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_attempts: int | None = None,
        on_event: Callable[[SourceEvent], None] | None = None,
        ffmpeg: str = "ffmpeg",
        input_format: str | None = None,
        input_options: Sequence[str] = (),
    ) -> None:
        if not protocol.MIN_SAMPLE_RATE <= sample_rate <= protocol.MAX_SAMPLE_RATE:
            raise UsageError(
                f"sample_rate={sample_rate} must be in "
                f"{protocol.MIN_SAMPLE_RATE}..{protocol.MAX_SAMPLE_RATE}"
            )
        for name, value in (
            ("block_seconds", block_seconds),
            ("stall_timeout_s", stall_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("backoff_initial_s", backoff_initial_s),
            ("backoff_max_s", backoff_max_s),
        ):
            if not value > 0 or not math.isfinite(value):
                raise UsageError(f"{name}={value} must be a positive number of seconds")
        if max_attempts is not None and max_attempts < 1:
            raise UsageError(f"max_attempts={max_attempts} must be >= 1 or None")
        parts = urllib.parse.urlsplit(url)
        if input_format is not None:
            if not url:
                raise UsageError(f"an input name is needed with input_format={input_format!r}")
            live = True
        elif not parts.scheme or not (parts.netloc or parts.path):
            raise UsageError(f"url={url!r} is not a URL; give e.g. http://host:8000/live.mp3")
        resolved = shutil.which(ffmpeg)
        if resolved is None:
            raise UnavailableError(
                f"{ffmpeg!r} not found: network streams are decoded by FFmpeg; "
                "install it (apt-get install ffmpeg)"
            )
        if (
            input_format is None
            and parts.scheme.lower() in _HTTP_SCHEMES
            and parts.path.lower().endswith((".pls", ".m3u"))
        ):
            url = _resolve_station_list(url, timeout_s=connect_timeout_s)
            parts = urllib.parse.urlsplit(url)
        self.url = url
        #: The URL for logs and messages: a password in it is replaced by ``***``.
        self.shown_url = _without_password(url) if input_format is None else f"{input_format}:{url}"
        self.name = _name_of(url) if input_format is None else url
        self.input_format = input_format
        self.input_options = tuple(input_options)
        self.sample_rate = int(sample_rate)
        self.block_frames = max(1, round(block_seconds * self.sample_rate))
        self.block_seconds = self.block_frames / self.sample_rate
        self.fast = fast
        self.stall_timeout_s = stall_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_attempts = max_attempts
        self.on_event = on_event
        self._ffmpeg = resolved
        self._events: collections.deque[SourceEvent] = collections.deque(maxlen=1000)
        self._connection: _Connection | None = None
        self._closed = False
        self.blocks_read = 0
        self.connects = 0
        self.drops = 0
        self.stalls = 0
        self.connect_failures = 0
        self.gap_blocks = 0
        self.titles = 0
        self.title = ""
        #: Packed-audio HLS: the first segment's timestamp, the origin of a resumed connection.
        self._packed_origin_pts: int | None = None
        #: A VOD playlist's segment starts (seconds): from the probe, else read at a resume.
        self._segment_starts: tuple[float, ...] | None = None
        self._playlist = (
            input_format is None and parts.scheme in _HTTP_SCHEMES and _is_playlist(url, "")
        )
        if live is None:
            live = self._probe()
        self.live = bool(live)

    # -- Source protocol -------------------------------------------------------

    def status_fields(self) -> dict[str, int]:
        return {
            "blocks_read": self.blocks_read,
            "connects": self.connects,
            "drops": self.drops,
            "stalls": self.stalls,
            "connect_failures": self.connect_failures,
            "gap_blocks": self.gap_blocks,
            "titles": self.titles,
        }

    def pop_events(self) -> list[SourceEvent]:
        """The events since the last call, oldest first (at most the last 1000)."""
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    def close(self) -> None:
        """Stop the decoder and the network reader; safe to call twice."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def blocks(self, stop: threading.Event) -> Iterator[Block]:
        """Yield blocks until a static stream ends, ``stop`` is set, or attempts run out.

        Raises
        ------
        UnavailableError
            ``max_attempts`` consecutive connection attempts failed.
        """
        if self._closed:
            raise RuntimeError("blocks() on a closed NetworkSource")
        logger.info(
            "reading url=%s live=%s sample_rate=%d block_seconds=%g fast=%s",
            self.shown_url,
            self.live,
            self.sample_rate,
            self.block_seconds,
            self.fast,
        )
        block_bytes = self.block_frames * 4
        index = 0  # the next block's index: its start on the audio timeline is index * block
        backoff_s = self.backoff_initial_s
        failed_attempts = 0
        down_since: float | None = None  # wall time the audio stopped; None while it flows
        last_capture = -math.inf
        pace = _Pace(time.monotonic(), time.time(), 0)
        while not stop.is_set():
            resume_s = 0.0 if self.live else index * self.block_seconds
            try:
                opened = self._connect_unless_stopped(resume_s=resume_s, stop=stop)
            except _ConnectError as exc:
                why = str(exc).replace(self.url, self.shown_url)
                failed_attempts += 1
                self.connect_failures += 1
                logger.warning(
                    "connect failed url=%s reason=%s attempt=%d retry_in_s=%.1f",
                    self.shown_url,
                    why,
                    failed_attempts,
                    backoff_s,
                )
                if self.max_attempts is not None and failed_attempts >= self.max_attempts:
                    raise UnavailableError(
                        f"cannot open {self.shown_url} after {failed_attempts} attempts ({why}); "
                        "check the URL and that the station is up"
                    ) from None
                if stop.wait(backoff_s):
                    return
                backoff_s = min(backoff_s * 2, self.backoff_max_s)
                continue
            if opened is None:
                return
            connection = self._connection = opened
            pending = bytearray()
            start_index: int | None = None  # index of this connection's first block
            titles: list[tuple[float, str]] = []
            last_data = time.monotonic()
            reason = ""
            ended_cleanly = False
            try:
                while not stop.is_set():
                    data = connection.read(_POLL_S)
                    if data is None:
                        if time.monotonic() - last_data >= self.stall_timeout_s:
                            self.stalls += 1
                            reason = f"stall: no audio for {self.stall_timeout_s:g} s"
                            break
                        continue
                    if not data:
                        connection.drain_titles(_DRAIN_TITLES_S)
                        code = connection.exit_code()
                        ended_cleanly = (
                            not self.live
                            and code == 0
                            and not connection.end_reason
                            and not connection.input_error
                        )
                        reason = connection.failure().replace(self.url, self.shown_url)
                        if connection.stalled:
                            self.stalls += 1
                        break
                    last_data = time.monotonic()
                    pending += data
                    while len(pending) >= block_bytes:
                        now = time.time()
                        if start_index is None:
                            # This connection's first block: account for the outage before it.
                            self.connects += 1
                            if down_since is not None:
                                index = self._resumed(index, down_since, now)
                                down_since = None
                            start_index = index
                            pace = _Pace(time.monotonic(), now, index * self.block_frames)
                        self._collect_titles(connection, start_index, index, titles)
                        start_s = index * self.block_seconds
                        end_s = start_s + self.block_seconds
                        for at_s, title in [t for t in titles if t[0] < end_s]:
                            titles.remove((at_s, title))
                            self._title_changed(title, at_s, now)
                        samples = np.frombuffer(bytes(pending[:block_bytes]), dtype="<f4")
                        del pending[:block_bytes]
                        block = self._block(index, samples, now, last_capture, pace)
                        last_capture = block.capture_time
                        if not self._wait_due(index + 1, stop, pace):
                            return
                        index += 1
                        self.blocks_read += 1
                        failed_attempts = 0
                        if (index - start_index) * self.block_seconds >= _STABLE_AFTER_S:
                            backoff_s = self.backoff_initial_s
                        yield block
                if stop.is_set():
                    return
            finally:
                self._connection = None
                if resume_s == 0 and connection.packed_first_pts is not None:
                    self._packed_origin_pts = connection.packed_first_pts
                connection.close()
            tail = np.frombuffer(bytes(pending[: len(pending) // 4 * 4]), dtype="<f4")
            if start_index is not None:
                # Titles that came after the last block (the end of a connection's output):
                # those within the audio delivered, the tail of a clean end included.
                self._collect_titles(connection, start_index, index, titles)
                end_s = (index + (tail.size / self.block_frames if ended_cleanly else 0)) * (
                    self.block_seconds
                )
                for at_s, title in sorted(t for t in titles if t[0] < end_s):
                    self._title_changed(title, at_s, time.time())
            if ended_cleanly:
                if tail.size:
                    self.blocks_read += 1
                    yield self._block(index, tail, time.time(), last_capture, pace)
                logger.info("stream ended url=%s blocks=%d", self.shown_url, self.blocks_read)
                return
            if start_index is None:
                # Connected, but not one block came: a failed attempt, not a drop.
                failed_attempts += 1
                self.connect_failures += 1
                logger.warning(
                    "connect failed url=%s reason=%s attempt=%d retry_in_s=%.1f",
                    self.shown_url,
                    reason,
                    failed_attempts,
                    backoff_s,
                )
                if self.max_attempts is not None and failed_attempts >= self.max_attempts:
                    raise UnavailableError(
                        f"no audio from {self.shown_url} after {failed_attempts} attempts "
                        f"({reason}); check the URL and that the station is up"
                    )
            else:
                # A drop; the partial block in hand is discarded with the outage.
                self.drops += 1
                down_since = time.time()
                down_at_s = index * self.block_seconds
                logger.warning(
                    "stream dropped url=%s reason=%s at_s=%.1f drops=%d retry_in_s=%.1f",
                    self.shown_url,
                    reason,
                    down_at_s,
                    self.drops,
                    backoff_s,
                )
                self._emit(SourceEvent("source_down", down_since, down_at_s, reason=reason))
            if stop.wait(backoff_s):
                return
            backoff_s = min(backoff_s * 2, self.backoff_max_s)

    # -- internals -------------------------------------------------------------

    def _resumed(self, index: int, down_since: float, now: float) -> int:
        """The first block after an outage: log it, emit ``source_up``, return its index.

        A live stream lost the audio of the outage: the index jumps by it (at least one
        block), which the worker sees as a sequence gap.  A static stream resumed where it
        stopped, so its index does not move.
        """
        outage_s = max(0.0, now - self.block_seconds - down_since)
        if self.live and self.blocks_read:
            skipped = max(1, round(outage_s / self.block_seconds))
            index += skipped
            self.gap_blocks += skipped
        logger.info(
            "reconnected url=%s outage_s=%.1f at_s=%.1f connects=%d",
            self.shown_url,
            outage_s,
            index * self.block_seconds,
            self.connects,
        )
        self._emit(SourceEvent("source_up", now, index * self.block_seconds, outage_s=outage_s))
        return index

    def _collect_titles(
        self,
        connection: _Connection,
        start_index: int,
        index: int,
        titles: list[tuple[float, str]],
    ) -> None:
        """Move the connection's titles to ``titles`` as (audio position, title).

        Timed ID3 titles come with their position after the connection's first decoded
        sample, kept even when they come a few blocks after that position (FFmpeg's
        second output lags its first at times; the worker places an event by its
        ``at_s``), and one from before the first sample applies from there.  ICY titles
        come with a byte offset, before their audio: at the block in hand at the latest.
        """
        start_s = start_index * self.block_seconds
        while connection.timed_titles:
            offset_s, title = connection.timed_titles.popleft()
            titles.append((start_s + max(0.0, offset_s), title))
        block_s = index * self.block_seconds
        while connection.titles:
            byte_offset, title = connection.titles.popleft()
            if not connection.titles_seen:
                # The first metadata of a connection names what is playing since its start.
                connection.titles_seen = True
                titles.append((max(start_s, block_s), title))
                continue
            rate = connection.byte_rate
            if rate <= 0:  # no declared bit rate: bytes fed per second decoded so far
                decoded_s = (index - start_index) * self.block_seconds
                rate = connection.audio_bytes / decoded_s if decoded_s > 0 else 0.0
            at_s = start_s + (byte_offset / rate if rate > 0 else 0.0)
            titles.append((max(at_s, block_s), title))

    def _block(
        self, index: int, samples: np.ndarray, now: float, last_capture: float, pace: _Pace
    ) -> Block:
        if self.live:
            # Arrival time of the block's end minus its length; never earlier than the last one.
            capture_time = max(now - samples.size / self.sample_rate, last_capture)
        else:
            offset_frames = index * self.block_frames - pace.origin_frames
            capture_time = pace.start_unix + offset_frames / self.sample_rate
        return Block(
            index=index,
            samples=np.ascontiguousarray(samples, dtype=np.float32),
            sample_rate=self.sample_rate,
            capture_time=capture_time,
        )

    def _wait_due(self, next_index: int, stop: threading.Event, pace: _Pace) -> bool:
        """Static streams in real time: wait until the block's last sample is due."""
        if self.live or self.fast:
            return not stop.is_set()
        offset_frames = next_index * self.block_frames - pace.origin_frames
        delay = pace.start_mono + offset_frames / self.sample_rate - time.monotonic()
        return not (delay > 0 and stop.wait(delay))

    def _title_changed(self, title: str, at_s: float, now: float) -> None:
        if title == self.title:
            return
        self.title = title
        self.titles += 1
        logger.info("now playing url=%s at_s=%.1f title=%r", self.shown_url, at_s, title)
        self._emit(SourceEvent("now_playing", now, at_s, title=title))

    def _emit(self, event: SourceEvent) -> None:
        self._events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _probe(self) -> bool:
        """Ask the server whether the stream is live; raise ``UnavailableError`` if unreachable."""
        scheme = urllib.parse.urlsplit(self.url).scheme.lower()
        if scheme not in _HTTP_SCHEMES:
            return scheme in _LIVE_SCHEMES
        try:
            opened = _open_http(self.url, timeout_s=self.connect_timeout_s)
            try:
                content_type = opened.header("Content-Type")
                if _is_playlist(opened.url, content_type):
                    self._playlist = True
                    text = opened.response.read(_MAX_PLAYLIST_BYTES).decode("utf-8", "replace")
                    # A master goes by its first variant.
                    media = _media_playlist(opened.url, text, timeout_s=self.connect_timeout_s)
                    starts = _vod_starts(media)
                    if starts is None:
                        return True
                    self._segment_starts = starts  # kept for a resume (resume_options)
                    return False
                icy = any(
                    name.lower().startswith(("icy-", "ice-")) for name in opened.response.headers
                )
                return icy or not opened.header("Content-Length")
            finally:
                opened.abort()
        except (_ConnectError, OSError, http.client.HTTPException) as exc:
            reason = str(exc).replace(self.url, self.shown_url)
            raise UnavailableError(
                f"cannot open {self.shown_url}: {reason}; check the URL and that the station is up"
            ) from None

    def _connect_unless_stopped(
        self, *, resume_s: float, stop: threading.Event
    ) -> _Connection | None:
        """:meth:`_connect` in a thread, so that ``stop`` is obeyed within 0.2 s (``None``)."""
        outcome: list[_Connection | BaseException] = []

        def attempt() -> None:
            try:
                connection = self._connect(resume_s=resume_s)
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append(exc)
                return
            outcome.append(connection)
            if stop.is_set():
                connection.close()

        thread = threading.Thread(target=attempt, name="network-connect", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(_POLL_S)
            if stop.is_set():
                return None  # a connection made after this is closed by attempt()
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        if stop.is_set():
            result.close()
            return None
        return result

    def _connect(self, *, resume_s: float) -> _Connection:
        """Open one connection; raise :class:`_ConnectError` if it cannot be had."""
        if self._closed:
            raise _ConnectError("source closed")
        output = [*decoded_audio_options(self.sample_rate), "pipe:1"]
        # "level": each stderr line says its level, so warnings are kept and the rest parsed.
        base = [self._ffmpeg, "-hide_banner", "-nostats", "-loglevel", "level+info"]
        if self.input_format is not None:
            device = ["-f", self.input_format, *self.input_options]
            return _Connection(
                [*base, "-nostdin", *device, "-i", self.url, *output],
                http_response=None,
                stall_timeout_s=self.stall_timeout_s,
            )
        scheme = urllib.parse.urlsplit(self.url).scheme.lower()
        if self.live and scheme in _HTTP_SCHEMES and not self._playlist:
            opened = _open_http(self.url, timeout_s=self.stall_timeout_s)
            if _is_playlist(opened.url, opened.header("Content-Type")):
                opened.abort()
                self._playlist = True
            else:
                return _Connection(
                    [*base, *_input_format(opened.header("Content-Type")), "-i", "pipe:0", *output],
                    http_response=opened,
                    stall_timeout_s=self.stall_timeout_s,
                )
        seek, cut_s = self._resume_options(resume_s)
        cut = ["-af", f"atrim=start={cut_s:.6f}"] if cut_s > 0 else []
        packed_origin_pts = None
        if resume_s > 0 and self._packed_origin_pts is not None:
            packed_origin_pts = self._packed_origin_pts + round(resume_s * PTS_HZ)
        return _Connection(
            [*base, "-nostdin", *seek, *_tls_options(self.url), "-i", self.url, *cut, *output],
            http_response=None,
            stall_timeout_s=self.stall_timeout_s,
            timed_id3=self._playlist,
            packed_origin_pts=packed_origin_pts,
            # The titles' copy of the audio starts where the audio output does, within a frame.
            side_options=["-ss", f"{cut_s:.6f}"] if cut_s > 0 else [],
        )

    def _resume_options(self, resume_s: float) -> tuple[list[str], float]:
        """:func:`resume_options` at ``resume_s``, with the playlist's segments if it is one."""
        if resume_s <= 0:
            return [], 0.0
        return resume_options(self._vod_segment_starts() if self._playlist else (), resume_s)

    def _vod_segment_starts(self) -> tuple[float, ...]:
        """The playlist's segment starts (:func:`segment_starts`), from the probe or read
        at the first resume (a source told it is static); ``()`` while they cannot be read
        (each resume tries again) or when the playlist has none or does not end."""
        if self._segment_starts is not None:
            return self._segment_starts
        try:
            opened = _open_http(self.url, timeout_s=self.connect_timeout_s, icy=False)
            try:
                text = opened.response.read(_MAX_PLAYLIST_BYTES).decode("utf-8", "replace")
            finally:
                opened.abort()
            media = _media_playlist(opened.url, text, timeout_s=self.connect_timeout_s)
        except (_ConnectError, OSError, http.client.HTTPException) as exc:
            logger.warning(
                "cannot read the playlist url=%s to resume in its segment (%s); resuming "
                "with -ss, which may send up to one segment again",
                self.shown_url,
                str(exc).replace(self.url, self.shown_url),
            )
            return ()
        self._segment_starts = _vod_starts(media) or ()
        return self._segment_starts


def _tls_options(url: str) -> list[str]:
    """FFmpeg options that make it check an https server's certificate.

    FFmpeg's ``tls_verify`` is off by default: without these any certificate is
    taken.  The trust store is Python's (``SSL_CERT_FILE`` when set), else the
    system's.  FFmpeg 5.1's HLS demuxer does not pass the option on to its segment
    requests (only the playlist is checked; docs/STATIONS.md).
    """
    if urllib.parse.urlsplit(url).scheme.lower() != "https":
        return []
    ca_file = ssl.get_default_verify_paths().cafile
    return ["-tls_verify", "1", *(["-ca_file", ca_file] if ca_file else [])]


def _input_format(content_type: str) -> list[str]:
    """ffmpeg options naming the demuxer of a live HTTP stream from its Content-Type.

    Probing a stream joined mid-way on a pipe takes ffmpeg several seconds of audio
    (it wants many consecutive frames); naming the format starts decoding at once.
    """
    media_type = content_type.split(";")[0].strip().lower()
    demuxer = _DEMUXERS.get(media_type)
    if demuxer is None:
        return ["-probesize", "65536"]
    return ["-f", demuxer]


#: Content-Type of live streams -> ffmpeg demuxer.
_DEMUXERS: Final = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mpeg3": "mp3",
    "audio/aac": "aac",
    "audio/aacp": "aac",
    "audio/x-aac": "aac",
    "audio/ogg": "ogg",
    "application/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/x-ogg": "ogg",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
}


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _name_of(url: str) -> str:
    """A short name for the default stream id: the host and the last path part."""
    parts = urllib.parse.urlsplit(url)
    stem = parts.path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    host = parts.hostname or parts.scheme
    return f"{host}-{stem}" if stem else host
