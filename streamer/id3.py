"""HLS titles: ID3v2 tags, and the timed-metadata stream of an MPEG-TS with its PTS.

HLS streams made of MPEG-TS segments carry titles as ID3 tags in a timed-metadata
stream (``stream_type`` 0x15; FFmpeg's codec ``timed_id3``), each tag a PES packet
with the PTS of the audio it belongs to.  :class:`streamer.network.NetworkSource`
has the ffmpeg that decodes such a stream also copy its audio and data packets,
timestamps kept, to a second output (``-c copy -f mpegts`` on an extra pipe);
:class:`TimedId3Reader` reads that output and :func:`parse_id3_title` takes the
title out of each tag::

    ffmpeg -i playlist.m3u8  -> pipe:1  f32le audio (the blocks)
                             -> pipe:N  mpegts: audio + timed_id3 packets, copied
    TimedId3Reader(pipe:N)   -> (seconds after the decoded audio's first sample, tag)

The position of a tag is its PTS minus the PTS of the first audio packet of that
output: the decoded audio starts with that packet (checked against tone changes
in ``tests/test_hls_titles.py``, across a reconnect too).

Neither parser trusts its input: a malformed packet or tag is skipped, never raised.
"""

from __future__ import annotations

import collections
import re
from typing import Final

__all__ = [
    "TimedId3Reader",
    "id3_tag_size",
    "parse_id3_title",
    "pts_difference_s",
    "restore_id3_header",
    "transport_stream_timestamp",
]

#: PTS are 33-bit counters of a 90 kHz clock.
PTS_HZ: Final = 90_000
_PTS_MODULO: Final = 1 << 33
_TS_PACKET: Final = 188
_SYNC: Final = 0x47
#: ``stream_type`` of ID3 timed metadata in a PMT (ISO/IEC 13818-1 "metadata in PES").
STREAM_TYPE_METADATA: Final = 0x15
#: A PES of timed metadata longer than this is not a title: dropped.
_MAX_TAG_BYTES: Final = 256 * 1024
#: Tags read but not yet placed (no audio seen yet); the oldest go first beyond this.
_MAX_PENDING: Final = 64
_STREAM_TITLE_RE: Final = re.compile(r"StreamTitle='(.*?)';", re.DOTALL)


# ---------------------------------------------------------------------------
# ID3v2 tags
# ---------------------------------------------------------------------------


def _synchsafe(data: bytes) -> int:
    return (data[0] & 0x7F) << 21 | (data[1] & 0x7F) << 14 | (data[2] & 0x7F) << 7 | data[3] & 0x7F


def _decode_text(data: bytes) -> list[str]:
    """The values of a text frame body (encoding byte first); ID3v2.4 separates them by NUL."""
    if not data:
        return []
    encoding, raw = data[0], data[1:]
    if encoding in (1, 2):  # UTF-16 with a BOM, UTF-16BE
        codec = "utf-16" if encoding == 1 else "utf-16-be"
        if len(raw) % 2:
            raw = raw[:-1]
        text = raw.decode(codec, "replace")
    elif encoding == 3:
        text = raw.decode("utf-8", "replace")
    else:
        text = raw.decode("latin-1")
    return [value.strip() for value in text.split("\0")]


def _frames(tag: bytes) -> dict[str, bytes]:
    """The frames of one ID3v2.2/2.3/2.4 tag by id (the first of each id), bodies undone.

    Unsynchronisation (tag-wide in 2.2/2.3, per frame in 2.4) is reversed, a 2.4 data
    length indicator is skipped; compressed or encrypted frames are left out.
    """
    if len(tag) < 10 or tag[:3] != b"ID3" or tag[3] not in (2, 3, 4):
        return {}
    version, flags = tag[3], tag[5]
    size = _synchsafe(tag[6:10])
    body = tag[10 : 10 + size]
    if flags & 0x80 and version < 4:
        body = body.replace(b"\xff\x00", b"\xff")
    if flags & 0x40 and version >= 3 and len(body) >= 4:  # extended header
        extended = _synchsafe(body[:4]) if version == 4 else int.from_bytes(body[:4], "big") + 4
        body = body[extended:]
    id_bytes, header_bytes = (3, 6) if version == 2 else (4, 10)
    frames: dict[str, bytes] = {}
    position = 0
    while position + header_bytes <= len(body):
        frame_id = body[position : position + id_bytes]
        if not frame_id.strip(b"\0") or not frame_id.isalnum():
            break  # padding
        if version == 2:
            length = int.from_bytes(body[position + 3 : position + 6], "big")
            frame_flags = 0
        elif version == 3:
            length = int.from_bytes(body[position + 4 : position + 8], "big")
            frame_flags = int.from_bytes(body[position + 8 : position + 10], "big")
        else:
            length = _synchsafe(body[position + 4 : position + 8])
            frame_flags = int.from_bytes(body[position + 8 : position + 10], "big")
        data = body[position + header_bytes : position + header_bytes + length]
        position += header_bytes + length
        if version == 3 and frame_flags & 0x00C0:  # compressed or encrypted
            continue
        if version == 4:
            if frame_flags & 0x000C:  # compressed or encrypted
                continue
            if frame_flags & 0x0002:  # frame unsynchronisation
                data = data.replace(b"\xff\x00", b"\xff")
            if frame_flags & 0x0001:  # data length indicator
                data = data[4:]
        frames.setdefault(frame_id.decode("ascii"), data)
        if frame_id == b"PRIV" and b"\0" in data:
            owner, _, private = data.partition(b"\0")
            frames.setdefault(f"PRIV:{owner.decode('latin-1')}", private)
        if frame_id in (b"TXXX", b"TXX"):
            values = _decode_text(data)
            if len(values) >= 2:
                frames.setdefault(f"TXXX:{values[0].lower()}", b"\x03" + values[1].encode())
    return frames


def _frames_fit(tag: bytes) -> bool:
    """Whether a tag's frames, read with its version's size rule, end where the tag ends."""
    version, size = tag[3], _synchsafe(tag[6:10])
    body = tag[10 : 10 + size]
    position = 0
    while position + 10 <= len(body) and body[position : position + 4].isalnum():
        raw = body[position + 4 : position + 8]
        length = _synchsafe(raw) if version == 4 else int.from_bytes(raw, "big")
        position += 10 + length
    return position == len(body) or (position < len(body) and not body[position:].strip(b"\0"))


def restore_id3_header(payload: bytes) -> bytes | None:
    """An ID3v2 tag from a timed-metadata packet, or ``None`` if it holds none.

    FFmpeg 5.1's MPEG-TS demuxer (Debian 12's) skips the first 5 bytes of every
    ``stream_type`` 0x15 PES as if they were a metadata access-unit header (later
    versions skip them for KLV only), so a tag ``ID3 <major> <minor> <flags> <size>
    <frames>`` comes out as ``<flags> <size> <frames>``.  Such a remainder is
    recognised by its synchsafe size and a frame id after it, and the header is put
    back; the lost major version is 4 or 3, whichever makes the frame sizes add up.

    Parameters
    ----------
    payload : bytes
        The PES payload: a whole tag, or a tag without its first 5 bytes.
    """
    if payload.startswith(b"ID3"):
        return payload
    if len(payload) < 15 or any(byte & 0x80 for byte in payload[1:5]):
        return None
    if not payload[5:9].isalnum() or _synchsafe(payload[1:5]) > len(payload) - 5:
        return None
    for major in (4, 3):
        tag = b"ID3" + bytes([major, 0]) + payload
        if _frames_fit(tag):
            return tag
    return None


def id3_tag_size(head: bytes) -> int | None:
    """The size of the ID3v2 tag at the start of ``head`` (its first 10 bytes at least),
    header and footer included, or ``None`` when ``head`` does not start with one."""
    if len(head) < 10 or head[:3] != b"ID3" or any(byte & 0x80 for byte in head[6:10]):
        return None
    return 10 + _synchsafe(head[6:10]) + (10 if head[5] & 0x10 else 0)


def transport_stream_timestamp(tag: bytes) -> int | None:
    """The 90 kHz PTS of a packed-audio HLS segment's first sample, from its ID3 tag.

    RFC 8216 section 3.4: a ``PRIV`` frame owned by
    ``com.apple.streaming.transportStreamTimestamp`` holds the 33-bit PTS in 8 bytes.
    """
    private = _frames(tag).get("PRIV:com.apple.streaming.transportStreamTimestamp")
    if private is None or len(private) != 8:
        return None
    return int.from_bytes(private, "big") & (_PTS_MODULO - 1)


def pts_difference_s(pts: int, origin: int) -> float:
    """Seconds from ``origin`` to ``pts`` (90 kHz, 33 bits), across a wrap; negative if before."""
    delta = (pts - origin) % _PTS_MODULO
    if delta >= _PTS_MODULO // 2:
        delta -= _PTS_MODULO
    return delta / PTS_HZ


def parse_id3_title(tag: bytes) -> str | None:
    """The title of one ID3v2 tag as a station would show it, or ``None`` if it has none.

    Parameters
    ----------
    tag : bytes
        One ID3v2.2, 2.3 or 2.4 tag, from its ``ID3`` header (trailing bytes ignored).

    Returns
    -------
    str or None
        ``"Artist - Title"`` from ``TPE1`` and ``TIT2`` (ICY ``StreamTitle``'s
        convention), or whichever of the two the tag has; else an ICY-style title from a
        ``TXXX`` frame described ``StreamTitle`` (its value, or the ``StreamTitle='...'``
        inside it).  ``None`` when the tag has none of these or is not an ID3v2 tag.

    Examples
    --------
    >>> frame = lambda fid, text: fid + len(text + b"x").to_bytes(4, "big") + b"\\0\\0\\3" + text
    >>> body = frame(b"TIT2", b"Song") + frame(b"TPE1", b"Band")
    >>> parse_id3_title(b"ID3\\3\\0\\0" + len(body).to_bytes(4, "big") + body)
    'Band - Song'
    """
    frames = _frames(tag)
    artist, title = (
        next(iter(_decode_text(frames.get(ids[0]) or frames.get(ids[1]) or b"")), "")
        for ids in (("TPE1", "TP1"), ("TIT2", "TT2"))
    )
    if artist and title:
        return f"{artist} - {title}"
    if artist or title:
        return artist or title
    icy = frames.get("TXXX:streamtitle")
    if icy is not None:
        value = next(iter(_decode_text(icy)), "")
        match = _STREAM_TITLE_RE.search(value)
        return (match.group(1) if match else value).strip()
    return None


# ---------------------------------------------------------------------------
# MPEG-TS: the timed-metadata stream and the first audio PTS
# ---------------------------------------------------------------------------


def _pes_pts(pes: bytes | bytearray) -> int | None:
    """The PTS of a PES packet's header, or ``None`` when it has none (or is no PES)."""
    if len(pes) < 14 or pes[:3] != b"\0\0\1" or not pes[7] & 0x80:
        return None
    b = pes[9:14]
    return (b[0] >> 1 & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


class TimedId3Reader:
    """Reads an MPEG-TS byte stream: ID3 tags of its timed-metadata stream, placed in time.

    Feed it the bytes as they come (any chunking); :meth:`feed` returns the tags
    completed so far as ``(seconds, tag)``: the tag's PTS minus the PTS of the first
    audio PES of the stream (negative when the tag comes before the audio).  Tags that
    come before any audio are held until the first audio PES is seen.

    Only the program's tables, the first PES of each audio stream and the metadata
    streams are looked at; the rest of the audio is skipped packet by packet.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pmt_pids: set[int] = set()
        self._metadata_pids: set[int] = set()
        self._audio_pids: set[int] = set()
        #: PES being gathered per metadata PID: (PTS, bytes so far, declared length or 0).
        self._gathering: dict[int, tuple[int | None, bytearray, int]] = {}
        #: PTS of the first audio PES (90 kHz), the origin of the positions.
        self.first_audio_pts: int | None = None
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=_MAX_PENDING)
        self.tags_read = 0

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        """Take more of the stream; return the tags completed by it as ``(seconds, tag)``."""
        buffer = self._buffer
        buffer += data
        position = 0
        end = len(buffer)
        while position + _TS_PACKET <= end:
            if buffer[position] != _SYNC:
                # Lost sync (not expected from ffmpeg's muxer): find the next sync byte.
                found = buffer.find(bytes([_SYNC]), position + 1)
                position = found if found >= 0 else end
                continue
            self._packet(buffer[position : position + _TS_PACKET])
            position += _TS_PACKET
        del buffer[:position]
        if self.first_audio_pts is None or not self._pending:
            return []
        origin = self.first_audio_pts
        placed = []
        while self._pending:
            pts, tag = self._pending.popleft()
            placed.append((pts_difference_s(pts, origin), tag))
        return placed

    def flush(self) -> list[tuple[float, bytes]]:
        """At the end of the stream: complete the PES in hand, return the tags it held."""
        for pid in list(self._gathering):
            self._finish(pid)
        return self.feed(b"")

    def _packet(self, packet: bytearray) -> None:
        pid = (packet[1] & 0x1F) << 8 | packet[2]
        if pid in self._audio_pids and self.first_audio_pts is not None:
            return  # the audio itself is not needed: only its first PTS
        start = bool(packet[1] & 0x40)
        control = packet[3] >> 4 & 3
        if not control & 1:
            return  # no payload
        offset = 4 + (1 + packet[4] if control & 2 else 0)
        if offset >= _TS_PACKET:
            return
        payload = packet[offset:]
        if pid == 0 and start:
            self._pat(payload)
        elif pid in self._pmt_pids and start:
            self._pmt(payload)
        elif pid in self._metadata_pids:
            self._metadata(pid, payload, start)
        elif pid in self._audio_pids and start:
            self.first_audio_pts = _pes_pts(payload)

    @staticmethod
    def _section(payload: bytearray) -> bytearray | None:
        """The PSI section starting in a payload (after its pointer field), CRC left on."""
        pointer = payload[0]
        section = payload[1 + pointer :]
        if len(section) < 3:
            return None
        length = (section[1] & 0x0F) << 8 | section[2]
        return section[: 3 + length] if len(section) >= 3 + length else None

    def _pat(self, payload: bytearray) -> None:
        section = self._section(payload)
        if section is None or section[0] != 0x00:
            return
        for at in range(8, len(section) - 4 - 3, 4):
            program = section[at] << 8 | section[at + 1]
            if program != 0:  # 0 names the network PID
                self._pmt_pids.add((section[at + 2] & 0x1F) << 8 | section[at + 3])

    def _pmt(self, payload: bytearray) -> None:
        section = self._section(payload)
        if section is None or section[0] != 0x02 or len(section) < 16:
            return
        info_length = (section[10] & 0x0F) << 8 | section[11]
        at = 12 + info_length
        while at + 5 <= len(section) - 4:
            stream_type = section[at]
            pid = (section[at + 1] & 0x1F) << 8 | section[at + 2]
            descriptors = (section[at + 3] & 0x0F) << 8 | section[at + 4]
            at += 5 + descriptors
            if stream_type == STREAM_TYPE_METADATA:
                self._metadata_pids.add(pid)
            elif stream_type in _AUDIO_STREAM_TYPES:
                self._audio_pids.add(pid)

    def _metadata(self, pid: int, payload: bytearray, start: bool) -> None:
        if start:
            if pid in self._gathering:
                self._finish(pid)
            if len(payload) < 9 or payload[:3] != b"\0\0\1":
                return
            declared = payload[4] << 8 | payload[5]
            total = 6 + declared if declared else 0  # 0: unbounded, ends at the next PES
            self._gathering[pid] = (_pes_pts(payload), bytearray(payload), total)
        elif pid in self._gathering:
            self._gathering[pid][1].extend(payload)
        else:
            return
        _, gathered, total = self._gathering[pid]
        if len(gathered) > _MAX_TAG_BYTES:
            del self._gathering[pid]
        elif total and len(gathered) >= total:
            self._finish(pid)

    def _finish(self, pid: int) -> None:
        pts, gathered, total = self._gathering.pop(pid)
        if pts is None or len(gathered) < 9:
            return
        tag = restore_id3_header(bytes(gathered[9 + gathered[8] : total or None]))
        if tag is not None:
            self.tags_read += 1
            self._pending.append((pts, tag))


#: ``stream_type`` values of audio in a PMT: MPEG-1/2 audio, AAC (ADTS, LATM), AC-3,
#: E-AC-3, and private data (FFmpeg writes Opus and others as 0x06).
_AUDIO_STREAM_TYPES: Final = frozenset({0x03, 0x04, 0x0F, 0x11, 0x81, 0x87, 0x06})
