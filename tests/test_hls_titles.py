"""HLS titles: timed ID3 in MPEG-TS segments, read with the audio position where they change.

FFmpeg's HLS muxer makes the audio segments; the HTTP server here puts a timed-metadata
stream into each segment as it serves it (a PMT entry of ``stream_type`` 0x15 with its
metadata descriptor and CRC, and one PES per ID3 tag with its PTS), like a station's
segmenter: every segment starts with the current title and a title change sits at its
own PTS in the middle of a segment.  Each "song" of the audio is a tone of its own, so
the test knows where a title really changes in the audio the source delivers, and checks
every ``now_playing`` event against that (within one block), on VOD, across a reconnect
and on a live playlist.
"""

from __future__ import annotations

import http.server
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers import SourceReader, read_to_end, wait_until
from icecast import FFMPEG, SYNTH_RATE, needs_ffmpeg

from streamer.core import Block
from streamer.id3 import TimedId3Reader, parse_id3_title, restore_id3_header
from streamer.network import NetworkSource, SourceEvent

FFPROBE = shutil.which("ffprobe")

# ---------------------------------------------------------------------------
# The programme: a new song every SONG_S seconds, each a tone of its own
# ---------------------------------------------------------------------------

SONG_S = 3.0
#: The first change is FIRST_CHANGE_S into the audio, then one every SONG_S.
FIRST_CHANGE_S = 1.5
TONES_HZ = (440.0, 660.0, 990.0)
#: AAC encoder delay of FFmpeg's aac encoder: the decoded audio starts with it.
PRIMING_S = 1024 / SYNTH_RATE
BLOCK_S = 0.1
PTS_HZ = 90_000
ID3_PID = 0x0102


def song_at(t_s: float) -> int:
    return max(0, math.floor((t_s - FIRST_CHANGE_S) / SONG_S) + 1)


def title_of(song: int) -> str:
    return f"Band {song} - Song {song}"


def programme_wav(folder: Path, seconds: float, *, changes_s: list[float] | None = None) -> Path:
    """``seconds`` of the programme at 44.1 kHz stereo, -12 dBFS tones with a little noise.

    Song ``k`` (tone ``k % 3``) starts at the ``k``-th of ``changes_s`` (by default
    FIRST_CHANGE_S, then every SONG_S).
    """
    rng = np.random.default_rng(13)
    t = np.arange(round(seconds * SYNTH_RATE)) / SYNTH_RATE
    if changes_s is None:
        songs = np.maximum(np.floor((t - FIRST_CHANGE_S) / SONG_S).astype(int) + 1, 0)
    else:
        songs = np.searchsorted(np.array(changes_s), t, side="right")
    frequency = np.array(TONES_HZ)[songs % len(TONES_HZ)]
    phase = 2 * np.pi * np.cumsum(frequency) / SYNTH_RATE
    audio = 0.25 * np.sin(phase) + 0.005 * rng.standard_normal(t.size)
    path = folder / "programme.wav"
    soundfile.write(path, np.stack([audio, audio], axis=1).astype(np.float32), SYNTH_RATE)
    return path


# ---------------------------------------------------------------------------
# ID3 tags and MPEG-TS, written here (independently of streamer.id3)
# ---------------------------------------------------------------------------


def synchsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3_tag(frames: list[tuple[str, bytes]], *, version: int = 4) -> bytes:
    """An ID3v2.``version`` tag of ``(frame id, body)`` frames (2.2: 3-letter ids)."""
    body = b""
    for frame_id, data in frames:
        if version == 2:
            body += frame_id.encode() + len(data).to_bytes(3, "big") + data
        else:
            size = synchsafe(len(data)) if version == 4 else len(data).to_bytes(4, "big")
            body += frame_id.encode() + size + b"\0\0" + data
    return b"ID3" + bytes([version, 0, 0]) + synchsafe(len(body)) + body


def text(value: str, encoding: int = 3) -> bytes:
    codec = {0: "latin-1", 1: "utf-16", 2: "utf-16-be", 3: "utf-8"}[encoding]
    return bytes([encoding]) + value.encode(codec)


def title_tag(song: int) -> bytes:
    return id3_tag([("TIT2", text(f"Song {song}")), ("TPE1", text(f"Band {song}"))])


def crc32_mpeg(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


#: ITU-T H.222.0 metadata_descriptor for ID3 (as Apple's timed metadata spec has it).
ID3_DESCRIPTOR = bytes([0x26, 13]) + b"\xff\xffID3 \xffID3 " + bytes([0, 0x0F])


def pes_ts_packets(pid: int, pts: int, payload: bytes, *, audio: bool = False) -> bytes:
    """One PES (stream_id 0xBD for metadata, 0xC0 for audio) with a PTS, in TS packets.

    The first packet says ``discontinuity_indicator``, so that its continuity counter
    needs no bookkeeping across segments.
    """
    p = pts % (1 << 33)
    pts_bytes = bytes(
        [
            0x21 | (p >> 29 & 0x0E),
            p >> 22 & 0xFF,
            (p >> 14 & 0xFE) | 1,
            p >> 7 & 0xFF,
            (p << 1 & 0xFE) | 1,
        ]
    )
    header = bytes([0x84, 0x80, 5]) + pts_bytes
    pes = b"\0\0\1" + bytes([0xC0 if audio else 0xBD])
    pes += (len(header) + len(payload)).to_bytes(2, "big") + header + payload
    out = b""
    first = True
    counter = 0
    while pes:
        room = 184 - (2 if first else 0)
        chunk, pes = pes[:room], pes[room:]
        stuffing = 184 - len(chunk)
        start = 0x40 if first else 0
        head = bytes([0x47, start | pid >> 8, pid & 0xFF])
        if stuffing:
            flags = 0x80 if first else 0x00
            field = (
                bytes([stuffing - 1]) + (bytes([flags]) + b"\xff" * (stuffing - 2))[: stuffing - 1]
            )
            out += head + bytes([0x30 | counter]) + field + chunk
        else:
            out += head + bytes([0x10 | counter]) + chunk
        counter = (counter + 1) & 0x0F
        first = False
    return out


def psi_packet(pid: int, table_id: int, extension: int, body: bytes) -> bytes:
    length = 5 + len(body) + 4
    section = bytes([table_id, 0xB0 | length >> 8, length & 0xFF])
    section += extension.to_bytes(2, "big") + bytes([0xC1, 0, 0]) + body
    section += crc32_mpeg(section).to_bytes(4, "big")
    packet = bytes([0x47, 0x40 | pid >> 8, pid & 0xFF, 0x10, 0]) + section
    return packet + b"\xff" * (188 - len(packet))


def packets(segment: bytes) -> Iterator[tuple[int, bytes]]:
    for at in range(0, len(segment) - 187, 188):
        packet = segment[at : at + 188]
        yield (packet[1] & 0x1F) << 8 | packet[2], packet


def payload_of(packet: bytes) -> bytes:
    return packet[5 + packet[4] :] if packet[3] & 0x20 else packet[4:]


def audio_pts(segment: bytes) -> list[int]:
    """PTS of the audio PES packets of an FFmpeg-made segment (its one PES stream)."""
    found = []
    for pid, packet in packets(segment):
        payload = payload_of(packet)
        if pid >= 0x100 and packet[1] & 0x40 and payload[:3] == b"\0\0\1" and payload[7] & 0x80:
            b = payload[9:14]
            found.append(
                (b[0] >> 1 & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1
            )
    return found


def with_timed_id3(segment: bytes, tags: list[tuple[int, bytes]]) -> bytes:
    """``segment`` with an ID3 timed-metadata stream in its PMT and ``tags`` as PES packets.

    Each PMT (one section in one packet, as FFmpeg writes it) gets the entry
    ``stream_type 0x15, PID ID3_PID`` with the metadata descriptor and a new CRC; the
    tags follow the first PMT.
    """
    out = bytearray()
    inserted = False
    for _, packet in packets(segment):
        payload = payload_of(packet)
        if packet[1] & 0x40 and payload[:2] == b"\x00\x02":  # pointer 0, table_id 2: a PMT
            section = payload[1:]
            length = (section[1] & 0x0F) << 8 | section[2]
            body = section[8 : 3 + length - 4]
            body += bytes([0x15]) + (0xE000 | ID3_PID).to_bytes(2, "big")
            body += (0xF000 | len(ID3_DESCRIPTOR)).to_bytes(2, "big") + ID3_DESCRIPTOR
            pid = (packet[1] & 0x1F) << 8 | packet[2]
            program = int.from_bytes(section[3:5], "big")
            pmt = bytearray(psi_packet(pid, 0x02, program, body))
            pmt[3] = packet[3] & 0x0F | 0x10  # keep the continuity counter
            out += pmt
            if not inserted:
                for pts, tag in tags:
                    out += pes_ts_packets(ID3_PID, pts, tag)
                inserted = True
            continue
        out += packet
    return bytes(out)


# ---------------------------------------------------------------------------
# The station: FFmpeg's segments served with timed ID3 put in on the way out
# ---------------------------------------------------------------------------


class _FolderServer(http.server.ThreadingHTTPServer):
    """Serves ``folder`` on a free loopback port in a thread; ``release`` frees stalled requests."""

    daemon_threads = True

    def __init__(self, folder: Path, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.folder = folder
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class _FolderHandler(http.server.BaseHTTPRequestHandler):
    server: _FolderServer

    def requested_file(self) -> tuple[str, Path] | None:
        """The file asked for, by name (no subfolders); answers 404 and None if there is none."""
        name = urllib.parse.urlsplit(self.path).path.lstrip("/")
        path = self.server.folder / name
        if "/" in name or not path.is_file():
            self.send_error(404)
            return None
        return name, path

    def log_message(self, format: str, *args: object) -> None:
        pass


class Station(_FolderServer):
    """Serves ``folder``; each ``.ts`` goes out with the titles of its span as timed ID3.

    ``origin_pts`` is the PTS of the first audio packet of the first segment (the
    programme's start).  A segment gets the title current at its first audio packet
    (PTS of that packet) and every title change from there to 0.4 s after its last
    audio PES.  ``stall`` names a segment whose first request is never answered.
    """

    def __init__(self, folder: Path, first_segment: str, *, stall: str = "") -> None:
        self.first_segment = first_segment
        self.stall = stall
        self.stalled = 0
        self.origin_pts: int | None = None
        self.served: dict[str, int] = {}
        self.lock = threading.Lock()
        super().__init__(folder, _StationHandler)

    def pts_of(self, t_s: float) -> int:
        assert self.origin_pts is not None
        return self.origin_pts + round((t_s + PRIMING_S) * PTS_HZ)

    def time_of(self, pts: int) -> float:
        assert self.origin_pts is not None
        return (pts - self.origin_pts) / PTS_HZ - PRIMING_S

    def segment(self, name: str) -> bytes:
        data = (self.folder / name).read_bytes()
        with self.lock:
            if self.origin_pts is None:
                self.origin_pts = audio_pts((self.folder / self.first_segment).read_bytes())[0]
        pts = audio_pts(data)
        first_s, last_s = self.time_of(pts[0]), self.time_of(pts[-1]) + 0.4
        tags = [(pts[0], title_tag(song_at(first_s)))]
        change_s = FIRST_CHANGE_S
        while change_s <= last_s:
            if change_s > first_s:
                tags.append((self.pts_of(change_s), title_tag(song_at(change_s))))
            change_s += SONG_S
        return with_timed_id3(data, tags)


class _StationHandler(_FolderHandler):
    server: Station

    def do_GET(self) -> None:
        requested = self.requested_file()
        if requested is None:
            return
        name, path = requested
        if name == self.server.stall and not self.server.stalled:
            self.server.stalled += 1
            self.server.release.wait(120)  # never answered while the test runs
            return
        if name.endswith(".ts"):
            body, kind = self.server.segment(name), "video/mp2t"
        else:
            body, kind = path.read_bytes(), "application/vnd.apple.mpegurl"
        self.server.served[name] = self.server.served.get(name, 0) + 1
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def hls_command(wav: Path, folder: Path, *args: str) -> list[str]:
    assert FFMPEG is not None
    return [
        *(FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
        *args,
        *("-i", str(wav), "-c:a", "aac", "-b:a", "64k", "-f", "hls"),
    ]


# ---------------------------------------------------------------------------
# What the source delivered: where the tone, i.e. the song, really changes
# ---------------------------------------------------------------------------


def tone_of(block: Block) -> int | None:
    """Index of the block's tone in TONES_HZ, or None when it is not clearly one."""
    if block.samples.size < 1600:
        return None
    spectrum = np.abs(np.fft.rfft(block.samples * np.hanning(block.samples.size)))
    hz = float(np.argmax(spectrum) * block.sample_rate / block.samples.size)
    nearest = min(range(len(TONES_HZ)), key=lambda i: abs(TONES_HZ[i] - hz))
    return nearest if abs(TONES_HZ[nearest] - hz) <= 30 else None


def tone_changes(blocks: list[Block]) -> list[tuple[float, int]]:
    """(start of the first block of a new tone, the tone) along the delivered blocks."""
    changes = []
    previous: int | None = None
    for block in blocks:
        tone = tone_of(block)
        if tone is None:
            continue
        if previous is not None and tone != previous:
            changes.append((block.index * BLOCK_S, tone))
        previous = tone
    return changes


def song_of(title: str) -> int:
    match = re.fullmatch(r"Band (\d+) - Song \1", title)
    assert match, f"not a title of the programme: {title!r}"
    return int(match.group(1))


def assert_titles_follow_the_audio(
    blocks: list[Block], events: list[SourceEvent], *, replayed: tuple[float, float] = (0, 0)
) -> int:
    """Every tone change has its title's event within one block, and every event sits at
    a change (or at the start of a connection, on the tone of its song); returns the
    number of changes checked.  Changes inside ``replayed`` (audio played a second time
    after a reconnect, whose titles FFmpeg does not give again) are not checked."""
    titles = [(e.at_s, song_of(e.title)) for e in events if e.kind == "now_playing"]
    starts = [0.0] + [e.at_s for e in events if e.kind == "source_up"]
    changes = tone_changes(blocks)
    by_index = {b.index: tone_of(b) for b in blocks}
    last_s = max(b.index for b in blocks) * BLOCK_S
    for change_s, tone in changes:
        if replayed[0] <= change_s <= replayed[1]:
            continue
        near = [song for at_s, song in titles if abs(at_s - change_s) <= BLOCK_S + 1e-6]
        assert any(song % len(TONES_HZ) == tone for song in near), (
            f"the audio changes to tone {tone} at {change_s:.2f} s with no title there: "
            f"titles {titles}, changes {changes}"
        )
    for at_s, song in titles:
        if at_s >= last_s - BLOCK_S:
            continue  # its audio was not delivered yet
        after = by_index.get(math.floor(at_s / BLOCK_S + 1e-6) + 1)
        assert after == song % len(TONES_HZ), (
            f"title of song {song} at {at_s:.2f} s, but the audio after it is tone {after}: "
            f"titles {titles}, changes {changes}"
        )
        at_change = any(abs(at_s - change_s) <= BLOCK_S + 1e-6 for change_s, _ in changes)
        at_start = any(abs(at_s - start_s) <= 1e-6 for start_s in starts)
        assert at_change or at_start, f"title at {at_s:.2f} s where the audio does not change"
    return sum(not replayed[0] <= change_s <= replayed[1] for change_s, _ in changes)


@pytest.fixture
def station_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "www"
    folder.mkdir()
    return folder


# ---------------------------------------------------------------------------
# The parsers on their own
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "title"),
    [
        (id3_tag([("TIT2", text("Song")), ("TPE1", text("Band"))]), "Band - Song"),
        (id3_tag([("TPE1", text("Bänd", 1)), ("TIT2", text("Söng", 1))], version=3), "Bänd - Söng"),
        (id3_tag([("TIT2", text("Só", 0))], version=3), "Só"),
        (id3_tag([("TT2", text("Old", 2)), ("TP1", text("Tag", 2))], version=2), "Tag - Old"),
        (id3_tag([("TXXX", text("StreamTitle\0StreamTitle='A - B';"))]), "A - B"),
        (id3_tag([("TXXX", text("streamtitle\0C - D"))]), "C - D"),
        (id3_tag([("TIT2", text("First\0Second"))]), "First"),
        (id3_tag([("PRIV", b"com.apple.streaming.transportStreamTimestamp\0" + bytes(8))]), None),
        (b"not a tag at all", None),
        (b"ID3\x04\x00\x00\x00\x00\x00\x05TI", None),
    ],
)
def test_parse_id3_title(tag: bytes, title: str | None) -> None:
    assert parse_id3_title(tag) == title


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("title_chars", [5, 300])
def test_a_tag_missing_its_first_5_bytes_is_restored(version: int, title_chars: int) -> None:
    # FFmpeg 5.1's demuxer drops "ID3" and the version; frame sizes >= 128 tell 2.3 from 2.4.
    long_title = "x" * title_chars
    tag = id3_tag([("TIT2", text(long_title)), ("TPE1", text("Band"))], version=version)
    restored = restore_id3_header(tag[5:])
    assert restored is not None
    assert parse_id3_title(restored) == f"Band - {long_title}"
    assert restore_id3_header(tag) == tag
    assert restore_id3_header(bytes(range(40))) is None


@pytest.mark.parametrize("chunk", [1, 7, 188, 10_000])
@pytest.mark.parametrize("origin_pts", [1_000, (1 << 33) - PTS_HZ])
def test_timed_id3_reader_places_tags_after_the_first_audio(chunk: int, origin_pts: int) -> None:
    audio_pid = 0x100
    pmt_body = (0xE000 | audio_pid).to_bytes(2, "big") + b"\xf0\x00"
    pmt_body += bytes([0x0F]) + (0xE000 | audio_pid).to_bytes(2, "big") + b"\xf0\x00"
    pmt_body += bytes([0x15]) + (0xE000 | ID3_PID).to_bytes(2, "big")
    pmt_body += (0xF000 | len(ID3_DESCRIPTOR)).to_bytes(2, "big") + ID3_DESCRIPTOR
    stream = psi_packet(0, 0x00, 1, (1).to_bytes(2, "big") + (0xE000 | 0x1000).to_bytes(2, "big"))
    stream += psi_packet(0x1000, 0x02, 1, pmt_body)
    # A tag before the audio (held, then placed at -0.5 s), the audio, a long tag across
    # several TS packets 2.5 s later (its PTS wraps when origin_pts is near 2**33).
    stream += pes_ts_packets(ID3_PID, origin_pts - PTS_HZ // 2, title_tag(0))
    stream += pes_ts_packets(audio_pid, origin_pts, bytes(600), audio=True)
    long_tag = id3_tag([("TIT2", text("y" * 500))])
    stream += pes_ts_packets(ID3_PID, origin_pts + 5 * PTS_HZ // 2, long_tag)
    stream += pes_ts_packets(audio_pid, origin_pts + PTS_HZ, bytes(600), audio=True)
    reader = TimedId3Reader()
    placed = []
    for at in range(0, len(stream), chunk):
        placed += reader.feed(stream[at : at + chunk])
    placed += reader.flush()
    assert [(round(s, 6), parse_id3_title(tag)) for s, tag in placed] == [
        (-0.5, title_of(0)),
        (2.5, "y" * 500),
    ]


# ---------------------------------------------------------------------------
# Real HLS: FFmpeg's segments with timed ID3, read by NetworkSource through FFmpeg
# ---------------------------------------------------------------------------


def read_through_a_stall(server: _FolderServer) -> SourceReader:
    """Read ``server``'s ``index.m3u8`` to its end across its one stalled request; closes both.

    The source must have dropped once (the stall) and reconnected.
    """
    source = NetworkSource(
        server.url("index.m3u8"),
        fast=True,
        block_seconds=BLOCK_S,
        stall_timeout_s=6.0,  # generous: only the stalled request may count as a stall
        backoff_initial_s=0.1,
    )
    reader = SourceReader(source)
    try:
        wait_until(reader.done, timeout_s=120, what=reader.seen)
    finally:
        reader.close()
        server.close()
    assert source.status_fields()["drops"] == 1, reader.seen()
    return reader


def make_vod(folder: Path) -> Path:
    wav = programme_wav(folder.parent, 12.0)
    command = hls_command(wav, folder)
    command += ["-hls_time", "2", "-hls_playlist_type", "vod"]
    command += ["-hls_segment_filename", str(folder / "seg%03d.ts"), str(folder / "index.m3u8")]
    subprocess.run(command, check=True, timeout=120)
    return folder / "index.m3u8"


@needs_ffmpeg
def test_vod_hls_titles_arrive_at_their_audio_positions(station_folder: Path) -> None:
    make_vod(station_folder)
    station = Station(station_folder, "seg000.ts")
    try:
        assert FFPROBE is not None, "Debian's ffmpeg package brings ffprobe"
        entries = ["-show_entries", "stream=codec_name,codec_type", "-of", "csv=p=0"]
        probe = subprocess.run(
            [FFPROBE, "-v", "error", *entries, station.url("seg002.ts")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # (ffprobe lists the program's streams, then the streams)
        assert set(probe.stdout.split()) == {"aac,audio", "timed_id3,data"}, probe
        source = NetworkSource(station.url("index.m3u8"), fast=True, block_seconds=BLOCK_S)
        assert not source.live
        blocks, events = read_to_end(source)
    finally:
        station.close()
    titles = [(round(e.at_s, 2), e.title) for e in events if e.kind == "now_playing"]
    # Songs 0..4 in order, song 0 from the start, each change 1.5 + 3k s into the
    # programme: the decoded audio starts with the encoder's delay (PRIMING_S).
    assert [title for _, title in titles] == [title_of(song) for song in range(5)]
    expected = [0.0] + [FIRST_CHANGE_S + SONG_S * k + PRIMING_S for k in range(4)]
    assert [at_s for at_s, _ in titles] == pytest.approx(expected, abs=BLOCK_S), titles
    assert assert_titles_follow_the_audio(blocks, events) == 4
    assert source.status_fields()["titles"] == 5
    assert source.status_fields()["drops"] == 0


@needs_ffmpeg
def test_master_playlist_titles_come_from_the_variant_decoded(station_folder: Path) -> None:
    playlist = make_vod(station_folder)
    # A second variant with segments of its own: FFmpeg probes its first one, no more.
    variant = playlist.read_text().replace("seg", "alt")
    (station_folder / "alt.m3u8").write_text(variant)
    for segment in station_folder.glob("seg*.ts"):
        (station_folder / segment.name.replace("seg", "alt")).write_bytes(segment.read_bytes())
    (station_folder / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=96000\nindex.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=64000\nalt.m3u8\n"
    )
    station = Station(station_folder, "seg000.ts")
    source = NetworkSource(station.url("master.m3u8"), fast=True, block_seconds=BLOCK_S)
    assert not source.live, "a master playlist whose first variant ends is VOD"
    try:
        blocks, events = read_to_end(source)
    finally:
        station.close()
    titles = [e.title for e in events if e.kind == "now_playing"]
    assert titles == [title_of(song) for song in range(5)]
    assert assert_titles_follow_the_audio(blocks, events) == 4
    fetched = {name for name in station.served if name.startswith("alt")}
    assert fetched <= {"alt.m3u8", "alt000.ts"}, station.served


@needs_ffmpeg
def test_vod_hls_titles_keep_their_positions_across_a_reconnect(station_folder: Path) -> None:
    make_vod(station_folder)
    # seg003 (6-8 s) is never answered the first time: the source stalls, reconnects
    # and resumes at about 6 s.  FFmpeg 5.1's HLS demuxer seeks to the start of the
    # segment holding a position, so a plain -ss played up to one segment (2 s) again,
    # with no titles; the source seeks just inside the segment before the position
    # and cuts the decoded audio up to it.
    station = Station(station_folder, "seg000.ts", stall="seg003.ts")
    reader = read_through_a_stall(station)
    assert station.served.get("seg003.ts") == 1
    songs = [song_of(e.title) for e in reader.events if e.kind == "now_playing"]
    assert songs == [0, 1, 2, 3, 4], reader.seen()
    up_s = next(e.at_s for e in reader.events if e.kind == "source_up")
    assert 4.0 < up_s < 8.0, reader.seen()
    # Nothing played twice or lost: the audio delivered is the programme's length
    # (12 s and the encoder's delay), and every change of song is titled where the
    # delivered audio changes, those after the reconnect too.
    total_s = sum(b.samples.size for b in reader.blocks) / 16000
    assert total_s == pytest.approx(12.0 + PRIMING_S, abs=BLOCK_S), reader.seen()
    assert assert_titles_follow_the_audio(reader.blocks, reader.events) == 4


@needs_ffmpeg
def test_live_hls_titles_arrive_at_their_audio_positions(station_folder: Path) -> None:
    wav = programme_wav(station_folder.parent, 40.0)
    # A live playlist: 1 s segments written in real time, the last 4 listed, no ENDLIST yet.
    command = hls_command(wav, station_folder, "-re")
    command += ["-hls_time", "1", "-hls_list_size", "4", "-hls_segment_filename"]
    command += [str(station_folder / "live%05d.ts"), str(station_folder / "live.m3u8")]
    muxer = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    station = Station(station_folder, "live00000.ts")
    try:
        wait_until(
            lambda: len(list(station_folder.glob("live*.ts"))) >= 4,
            timeout_s=60,
            what=lambda: str(sorted(p.name for p in station_folder.iterdir())),
            process=muxer,
        )
        source = NetworkSource(station.url("live.m3u8"), stall_timeout_s=20, block_seconds=BLOCK_S)
        assert source.live
        reader = SourceReader(source)
        try:
            # Three changes after the one the source joined in.
            wait_until(
                lambda: source.titles >= 4 and source.blocks_read * BLOCK_S > 12,
                timeout_s=90,
                what=reader.seen,
            )
        finally:
            reader.close()
    finally:
        muxer.kill()
        muxer.wait()
        station.close()
    assert source.status_fields()["drops"] == 0, reader.seen()
    songs = [song_of(e.title) for e in reader.events if e.kind == "now_playing"]
    assert songs == list(range(songs[0], songs[0] + len(songs))), reader.seen()
    assert assert_titles_follow_the_audio(reader.blocks, reader.events) >= 3


# ---------------------------------------------------------------------------
# Packed audio: .aac segments, each with an ID3 tag in front (title and PRIV timestamp)
# ---------------------------------------------------------------------------


def adts_frames(data: bytes) -> list[bytes]:
    frames = []
    at = 0
    while at + 7 <= len(data):
        assert data[at] == 0xFF and data[at + 1] & 0xF0 == 0xF0, f"no ADTS sync at {at}"
        length = (data[at + 3] & 3) << 11 | data[at + 4] << 3 | data[at + 5] >> 5
        frames.append(data[at : at + length])
        at += length
    return frames


class RangeFolder(_FolderServer):
    """Serves a folder and honours ``Range: bytes=A-B`` (206); keeps each request's range.

    A request for a closed range (a tag's head, not FFmpeg's ``bytes=0-``) is answered
    ``head_delay_s`` late, like a far server: the tags come after FFmpeg has read the audio.
    FFmpeg's first request for the file named ``stall`` is never answered.
    """

    def __init__(self, folder: Path, *, head_delay_s: float = 0.0, stall: str = "") -> None:
        self.head_delay_s = head_delay_s
        self.stall = stall
        self.ranges: list[tuple[str, str]] = []
        super().__init__(folder, _RangeHandler)


class _RangeHandler(_FolderHandler):
    server: RangeFolder

    def do_GET(self) -> None:
        requested = self.requested_file()
        if requested is None:
            return
        name, path = requested
        body = path.read_bytes()
        asked = self.headers.get("Range", "")
        self.server.ranges.append((name, asked))
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", asked)
        if match and match.group(2):
            time.sleep(self.server.head_delay_s)
        elif name == self.server.stall:
            self.server.stall = ""
            self.server.release.wait(120)  # never answered while the test runs
            return
        if match:
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) else len(body) - 1
            part = body[first : last + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{first + len(part) - 1}/{len(body)}")
            body = part
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


FRAMES_PER_PART = 86
PART_S = FRAMES_PER_PART * 1024 / SYNTH_RATE


def make_packed(folder: Path, songs: list[int]) -> Path:
    """A VOD of packed-audio segments of PART_S (86 AAC frames), ``songs[n]`` in part ``n``:
    each with an ID3 tag in front (PRIV timestamp, TIT2, TPE1), its song's tone after it."""
    # The decoded audio starts with the encoder's delay: a song's tone starts with its part.
    changes_s = [n * PART_S - PRIMING_S for n in range(1, len(songs)) if songs[n] != songs[n - 1]]
    wav = programme_wav(folder.parent, len(songs) * PART_S, changes_s=changes_s)
    adts = folder.parent / "programme.aac"
    assert FFMPEG is not None
    encode = ["-c:a", "aac", "-b:a", "64k", "-f", "adts", str(adts)]
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(wav), *encode],
        check=True,
        timeout=120,
    )
    frames = adts_frames(adts.read_bytes())
    origin_pts = 10 * PTS_HZ
    playlist = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2"]
    playlist += ["#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD"]
    owner = b"com.apple.streaming.transportStreamTimestamp\0"
    for number, song in enumerate(songs):
        first = number * FRAMES_PER_PART
        pts = origin_pts + round(first * 1024 / SYNTH_RATE * PTS_HZ)
        tag = id3_tag(
            [
                ("PRIV", owner + pts.to_bytes(8, "big")),
                ("TIT2", text(f"Song {song}")),
                ("TPE1", text(f"Band {song}")),
            ]
        )
        body = tag + b"".join(frames[first : first + FRAMES_PER_PART])
        (folder / f"part{number}.aac").write_bytes(body)
        playlist += [f"#EXTINF:{PART_S:.6f},", f"part{number}.aac"]
    (folder / "index.m3u8").write_text("\n".join([*playlist, "#EXT-X-ENDLIST", ""]))
    return folder / "index.m3u8"


@needs_ffmpeg
def test_packed_audio_hls_titles_come_from_each_segments_tag(station_folder: Path) -> None:
    # 5 segments of 2.0 s, a new song every 2 segments, the last song in the last
    # segment.  FFmpeg itself reads only the first segment's tag; the source fetches
    # each tag by a Range request, here answered 0.1 s late, so that the last ones come
    # after FFmpeg has ended: the source waits for them (up to 2 s).
    segments = 5
    segment_s = PART_S
    make_packed(station_folder, [number // 2 for number in range(segments)])
    server = RangeFolder(station_folder, head_delay_s=0.1)
    source = NetworkSource(server.url("index.m3u8"), fast=True, block_seconds=BLOCK_S)
    try:
        blocks, events = read_to_end(source)
    finally:
        server.close()
    titles = [(round(e.at_s, 3), e.title) for e in events if e.kind == "now_playing"]
    assert [title for _, title in titles] == [title_of(song) for song in range(3)]
    assert [at_s for at_s, _ in titles] == pytest.approx(
        [0.0, 2 * segment_s, 4 * segment_s], abs=0.01
    )
    assert assert_titles_follow_the_audio(blocks, events) == 2
    # Each tag was fetched alone: one request for the first 4096 bytes per segment.
    heads = sorted(name for name, asked in server.ranges if asked == "bytes=0-4095")
    assert heads == sorted(f"part{number}.aac" for number in range(segments)), server.ranges


@needs_ffmpeg
def test_packed_audio_hls_titles_keep_their_positions_across_a_reconnect(
    station_folder: Path,
) -> None:
    # A new song in every 2.0 s part; part3 (6-8 s) is not answered the first time: the
    # source stalls, reconnects and resumes at ~5.9 s with ffmpeg -ss, which in packed
    # audio decodes from the position itself (not from part2's start, 4 s): the titles
    # of that connection are placed from the stream's first timestamp plus the position.
    make_packed(station_folder, list(range(6)))
    reader = read_through_a_stall(RangeFolder(station_folder, stall="part3.aac"))
    titles = [
        (round(e.at_s, 2), song_of(e.title)) for e in reader.events if e.kind == "now_playing"
    ]
    assert [song for _, song in titles] == list(range(6)), reader.seen()
    up_s = next(e.at_s for e in reader.events if e.kind == "source_up")
    assert [at_s for at_s, song in titles if song >= 3] == pytest.approx(
        [PART_S * song for song in range(3, 6)], abs=BLOCK_S
    )
    assert up_s < PART_S * 3
    # Nothing replayed: the audio delivered is the programme's length, every change titled.
    total_s = sum(b.samples.size for b in reader.blocks) / 16000
    assert total_s == pytest.approx(6 * PART_S, abs=0.1)
    assert assert_titles_follow_the_audio(reader.blocks, reader.events) == 5
