"""streamer.network against real servers: Icecast, an HLS folder over HTTP, a raw ICY server.

Needs Debian's ``icecast2`` and ``ffmpeg`` (``scripts/install.sh --dev``); tests that need
one of them skip with the reason when it is missing.  No timed assertions: every wait has a
generous deadline and fails with what was seen so far.
"""

from __future__ import annotations

import functools
import http.server
import itertools
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from helpers import SourceReader, StreamerSink, free_port, read_to_end, wait_until
from icecast import (
    FFMPEG,
    SYNTH_RATE,
    TONE_HZ,
    Icecast,
    needs_ffmpeg,
    needs_icecast,
)

from streamer.core import Block
from streamer.network import (
    NetworkSource,
    SourceEvent,
    parse_stream_title,
    segment_starts,
    station_list_urls,
)
from tagstream.errors import UnavailableError, UsageError

# ---------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of a 440 Hz tone at -12 dBFS with a little seeded noise, 44.1 kHz stereo."""
    rng = np.random.default_rng(13)
    t = np.arange(10 * SYNTH_RATE) / SYNTH_RATE
    tone = 0.25 * np.sin(2 * np.pi * TONE_HZ * t) + 0.005 * rng.standard_normal(t.size)
    path = tmp_path_factory.mktemp("audio") / "synth.wav"
    soundfile.write(path, np.stack([tone, tone], axis=1).astype(np.float32), SYNTH_RATE)
    return path


def dominant_hz(block: Block) -> float:
    """The strongest frequency of a block (Hann window, resolution sample_rate / size)."""
    spectrum = np.abs(np.fft.rfft(block.samples * np.hanning(block.samples.size)))
    return float(np.argmax(spectrum) * block.sample_rate / block.samples.size)


def is_tone(block: Block) -> bool:
    return block.samples.size >= 1600 and abs(dominant_hz(block) - TONE_HZ) <= 20.0


# ---------------------------------------------------------------------------
# A real Icecast server and a real FFmpeg source client
# ---------------------------------------------------------------------------


@pytest.fixture
def icecast() -> Iterator[Icecast]:
    server = Icecast()
    try:
        yield server
    finally:
        server.close()


@needs_icecast
def test_icecast_stream_is_decoded_and_titles_arrive_with_their_position(
    icecast: Icecast, synth_wav: Path
) -> None:
    icecast.start_source(synth_wav)
    source = NetworkSource(icecast.url, block_seconds=0.1, stall_timeout_s=20)
    assert source.live, "an Icecast mount is live"
    reader = SourceReader(source)
    try:
        wait_until(lambda: len(reader.blocks) >= 20, timeout_s=60, what=reader.seen)
        icecast.set_title("Alice Band - First Song")
        wait_until(
            lambda: source.title == "Alice Band - First Song", timeout_s=60, what=reader.seen
        )
        delivered_s = len(reader.blocks) * source.block_seconds
        icecast.set_title("Bob Trio - Second Song")
        wait_until(lambda: source.title == "Bob Trio - Second Song", timeout_s=60, what=reader.seen)
    finally:
        reader.close()
    titles = [(e.at_s, e.title) for e in reader.events if e.kind == "now_playing"]
    assert [title for _, title in titles] == ["Alice Band - First Song", "Bob Trio - Second Song"]
    first_at, second_at = titles[0][0], titles[1][0]
    # Each change lies after the audio delivered before it was made, in audio order.
    assert 2.0 <= first_at < second_at
    assert second_at >= delivered_s
    assert source.status_fields()["titles"] == 2
    assert source.status_fields()["drops"] == 0
    blocks = reader.blocks
    assert [b.index for b in blocks] == list(range(len(blocks))), "no gap without a drop"
    assert all(b.samples.size == 1600 and b.sample_rate == 16000 for b in blocks)
    assert sum(is_tone(b) for b in blocks[10:]) >= 0.95 * len(blocks[10:]), "the tone came through"
    captures = [b.capture_time for b in blocks]
    assert captures == sorted(captures)


@needs_icecast
def test_source_killed_and_restarted_is_a_counted_gap_then_audio_resumes(
    icecast: Icecast, synth_wav: Path
) -> None:
    icecast.start_source(synth_wav)
    source = NetworkSource(icecast.url, block_seconds=0.1, backoff_initial_s=0.2, backoff_max_s=1.0)
    reader = SourceReader(source)
    try:
        wait_until(lambda: len(reader.blocks) >= 30, timeout_s=60, what=reader.seen)
        icecast.kill_source()
        wait_until(lambda: "source_down" in reader.kinds(), timeout_s=60, what=reader.seen)
        before = len(reader.blocks)
        # The mount is gone: attempts fail (404) until the source is back.
        wait_until(lambda: source.connect_failures >= 1, timeout_s=60, what=reader.seen)
        assert "source_up" not in reader.kinds()
        icecast.start_source(synth_wav)
        wait_until(lambda: len(reader.blocks) >= before + 30, timeout_s=60, what=reader.seen)
    finally:
        reader.close()
    status = source.status_fields()
    assert status["drops"] == 1
    assert status["connects"] == 2
    assert status["connect_failures"] >= 1
    assert status["gap_blocks"] >= 1
    down = next(e for e in reader.events if e.kind == "source_down")
    up = next(e for e in reader.events if e.kind == "source_up")
    assert down.reason
    assert up.outage_s > 0
    blocks = reader.blocks
    last_before, first_after = blocks[before - 1], blocks[before]
    # The wire sees a sequence gap as long as the outage, never stale audio.
    assert first_after.index - last_before.index - 1 == status["gap_blocks"]
    assert down.at_s == pytest.approx((last_before.index + 1) * source.block_seconds)
    assert up.at_s == pytest.approx(first_after.index * source.block_seconds)
    assert up.at_s - down.at_s == pytest.approx(up.outage_s, abs=0.2)
    assert first_after.capture_time > last_before.capture_time
    indexes = [b.index for b in blocks]
    assert indexes == sorted(set(indexes))
    assert sum(is_tone(b) for b in blocks[before + 5 :]) >= 0.9 * len(blocks[before + 5 :])


@needs_icecast
def test_streamer_sends_the_outage_as_a_sequence_gap(icecast: Icecast, synth_wav: Path) -> None:
    """Through the real Streamer and wire: the worker sees the drop as a seq gap, then an end."""
    import zmq

    import protocol
    from streamer.core import Streamer

    icecast.start_source(synth_wav)
    context = zmq.Context()
    sink = StreamerSink(context)
    source = NetworkSource(icecast.url, backoff_initial_s=0.2, backoff_max_s=1.0)
    streamer = Streamer(source, endpoint=sink.endpoint, stream_id="station")
    thread = threading.Thread(target=streamer.run, daemon=True)
    thread.start()
    received: list[protocol.InputMessage] = []

    def receive_until(predicate: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"{len(received)} messages; status {source.status_fields()}")
            if sink.socket.poll(200):
                received.append(sink.receive(0))

    def frames() -> list[protocol.AudioFrame]:
        return [m for m in received if isinstance(m, protocol.AudioFrame)]

    try:
        receive_until(lambda: len(frames()) >= 30, 60)
        icecast.kill_source()
        receive_until(lambda: source.drops >= 1 and source.connect_failures >= 1, 60)
        icecast.start_source(synth_wav)
        receive_until(
            lambda: source.connects >= 2 and frames()[-1].seq > source.gap_blocks + 40, 60
        )
        streamer.stop()
        receive_until(lambda: isinstance(received[-1], protocol.EndOfStream), 30)
    finally:
        streamer.stop()
        thread.join(timeout=10)
        sink.close()
        context.term()
    assert not thread.is_alive()
    seqs = [f.seq for f in frames()]
    jumps = [b - a for a, b in itertools.pairwise(seqs) if b != a + 1]
    assert jumps == [source.gap_blocks + 1], "exactly one gap, as long as the outage"
    assert received[-1].seq == seqs[-1] + 1
    assert all(f.stream == "station" and f.sample_rate == 16000 for f in frames())


@needs_icecast
@pytest.mark.parametrize(
    ("mount", "codec", "content_type", "muxer"),
    [
        ("/live.aac", ("-c:a", "aac", "-b:a", "96k"), "audio/aac", "adts"),
        ("/live.opus", ("-c:a", "libopus", "-b:a", "64k"), "audio/ogg", "ogg"),
        ("/live.ogg", ("-c:a", "libvorbis", "-q:a", "3"), "application/ogg", "ogg"),
    ],
    ids=["aac", "opus", "vorbis"],
)
def test_icecast_codecs_are_decoded(
    icecast: Icecast,
    synth_wav: Path,
    mount: str,
    codec: tuple[str, ...],
    content_type: str,
    muxer: str,
) -> None:
    icecast.start_source(
        synth_wav, mount=mount, codec=codec, content_type=content_type, muxer=muxer
    )
    source = NetworkSource(f"http://127.0.0.1:{icecast.port}{mount}", stall_timeout_s=20)
    assert source.live
    reader = SourceReader(source)
    try:
        wait_until(lambda: len(reader.blocks) >= 40, timeout_s=60, what=reader.seen)
    finally:
        reader.close()
    blocks = reader.blocks
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert sum(is_tone(b) for b in blocks[10:]) >= 0.95 * len(blocks[10:])
    assert source.status_fields()["drops"] == 0


# ---------------------------------------------------------------------------
# HLS made by FFmpeg's HLS muxer, served by http.server
# ---------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on a free loopback port: (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def ffmpeg_encode(source: Path, *args: str) -> None:
    assert FFMPEG is not None
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(source), *args],
        check=True,
        timeout=120,
    )


@needs_ffmpeg
def test_hls_vod_is_read_to_its_end(synth_wav: Path, http_folder: tuple[Path, str]) -> None:
    folder, base = http_folder
    ffmpeg_encode(
        synth_wav,
        *("-c:a", "aac", "-b:a", "96k", "-f", "hls", "-hls_time", "2"),
        *("-hls_playlist_type", "vod", "-hls_segment_filename", str(folder / "seg%03d.ts")),
        str(folder / "index.m3u8"),
    )
    assert len(list(folder.glob("seg*.ts"))) >= 4
    source = NetworkSource(f"{base}/index.m3u8", fast=True, block_seconds=0.1)
    assert not source.live, "a playlist with #EXT-X-ENDLIST is VOD"
    try:
        blocks = list(source.blocks(threading.Event()))
    finally:
        source.close()
    total_s = sum(b.samples.size for b in blocks) / 16000
    assert total_s == pytest.approx(10.0, abs=0.15)
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert all(b.samples.size == 1600 for b in blocks[:-1])
    assert sum(is_tone(b) for b in blocks[:-1]) >= 0.95 * (len(blocks) - 1)
    assert source.status_fields()["drops"] == 0
    assert source.status_fields()["connects"] == 1


@needs_ffmpeg
def test_live_hls_is_followed(synth_wav: Path, http_folder: tuple[Path, str]) -> None:
    folder, base = http_folder
    assert FFMPEG is not None
    # A live playlist: 1 s segments, the last 4 listed, no #EXT-X-ENDLIST, written in real time.
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
    command += ["-stream_loop", "-1", "-i", str(synth_wav), "-c:a", "aac", "-b:a", "64k"]
    command += ["-f", "hls", "-hls_time", "1", "-hls_list_size", "4"]
    command += ["-hls_flags", "delete_segments", "-hls_segment_filename"]
    command += [str(folder / "live%05d.ts"), str(folder / "live.m3u8")]
    muxer = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_until(
            lambda: len(list(folder.glob("live*.ts"))) >= 3 and (folder / "live.m3u8").exists(),
            timeout_s=60,
            what=lambda: str(sorted(p.name for p in folder.iterdir())),
        )
        source = NetworkSource(f"{base}/live.m3u8", stall_timeout_s=20)
        assert source.live, "a playlist without #EXT-X-ENDLIST is live"
        reader = SourceReader(source)
        try:
            # More than the playlist held at the start: new segments were fetched as they came.
            wait_until(lambda: len(reader.blocks) >= 80, timeout_s=60, what=reader.seen)
        finally:
            reader.close()
    finally:
        muxer.kill()
        muxer.wait()
    blocks = reader.blocks
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert sum(is_tone(b) for b in blocks[10:]) >= 0.9 * len(blocks[10:])
    assert source.status_fields()["drops"] == 0


@needs_ffmpeg
def test_static_file_url_is_paced_in_real_time(
    synth_wav: Path, http_folder: tuple[Path, str]
) -> None:
    folder, base = http_folder
    ffmpeg_encode(synth_wav, "-t", "3", "-c:a", "libmp3lame", "-b:a", "128k", str(folder / "a.mp3"))
    source = NetworkSource(f"{base}/a.mp3", block_seconds=0.1)
    assert not source.live, "a file with a Content-Length and no ICY headers is static"
    started = time.monotonic()
    try:
        blocks = list(source.blocks(threading.Event()))
    finally:
        source.close()
    elapsed_s = time.monotonic() - started
    total_s = sum(b.samples.size for b in blocks) / 16000
    assert total_s == pytest.approx(3.0, abs=0.1)
    # Paced: it cannot have been delivered faster than its schedule (a lower bound only).
    assert elapsed_s >= total_s - 0.15
    assert [b.capture_time for b in blocks] == sorted(b.capture_time for b in blocks)


class _CutFirstHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.body`` (no Range support); the first answer stops half-way."""

    server: _CutFirstServer

    def do_GET(self) -> None:
        body = self.server.body
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.server.requests == 1 else body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class _CutFirstServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, body: bytes, handler: type[http.server.BaseHTTPRequestHandler] = _CutFirstHandler
    ) -> None:
        self.body = body
        self.requests = 0
        super().__init__(("127.0.0.1", 0), handler)

    def read(self, **options: Any) -> tuple[NetworkSource, list[Any], list[Any]]:
        """Serve in a thread while a static ``NetworkSource(**options)`` reads it to its end."""
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{self.server_address[1]}/a.mp3"
        source = NetworkSource(url, live=False, fast=True, **options)
        try:
            blocks, events = read_to_end(source)
        finally:
            self.shutdown()
            self.server_close()
        return source, blocks, events


@needs_ffmpeg
def test_static_stream_cut_short_resumes_where_it_stopped(synth_wav: Path, tmp_path: Path) -> None:
    mp3 = tmp_path / "a.mp3"
    ffmpeg_encode(synth_wav, "-t", "6", "-c:a", "libmp3lame", "-b:a", "128k", str(mp3))
    source, blocks, events = _CutFirstServer(mp3.read_bytes()).read(backoff_initial_s=0.1)
    status = source.status_fields()
    assert status["drops"] == 1, events
    assert status["connects"] == 2
    assert [e.kind for e in events] == ["source_down", "source_up"]
    assert "prematurely" in events[0].reason or "error" in events[0].reason
    # Nothing lost and nothing played twice: the blocks run on without a jump to the end.
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert status["gap_blocks"] == 0
    total_s = sum(b.samples.size for b in blocks) / 16000
    assert total_s == pytest.approx(6.0, abs=0.1)
    assert sum(is_tone(b) for b in blocks[:-1]) >= 0.95 * (len(blocks) - 1)


class _UnsizedHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.body`` as HTTP/1.0 without a Content-Length: the end is the close."""

    server: _CutFirstServer

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.end_headers()
        self.wfile.write(self.server.body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@needs_ffmpeg
def test_static_file_without_a_length_is_read_to_its_end(synth_wav: Path, tmp_path: Path) -> None:
    # FFmpeg says "Stream ends prematurely at N, should be 18446744073709551615" (the
    # unknown size) when such a body ends: that is its end, not a drop to resume from.
    mp3 = tmp_path / "a.mp3"
    ffmpeg_encode(synth_wav, "-t", "4", "-c:a", "libmp3lame", "-b:a", "128k", str(mp3))
    server = _CutFirstServer(mp3.read_bytes(), _UnsizedHandler)
    source, blocks, events = server.read(max_attempts=1)
    assert events == []
    assert server.requests == 1
    status = source.status_fields()
    assert (status["connects"], status["drops"], status["connect_failures"]) == (1, 0, 0)
    total_s = sum(b.samples.size for b in blocks) / 16000
    assert total_s == pytest.approx(4.0, abs=0.1)
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert sum(is_tone(b) for b in blocks[:-1]) >= 0.95 * (len(blocks) - 1)


# ---------------------------------------------------------------------------
# A raw ICY server (Shoutcast v1 answers "ICY 200 OK"): exact title positions, stalls
# ---------------------------------------------------------------------------

METAINT = 8192


def icy_body(audio: bytes, titles: dict[int, str]) -> bytes:
    """``audio`` with an ICY metadata block every METAINT bytes; ``titles`` maps the
    number of the metadata block (0 = the first, after METAINT bytes) to a new title."""
    out = bytearray()
    for number, start in enumerate(range(0, len(audio), METAINT)):
        out += audio[start : start + METAINT]
        if start + METAINT > len(audio):
            break
        if number in titles:
            text = f"StreamTitle='{titles[number]}';StreamUrl='';".encode()
            text += b"\0" * (-len(text) % 16)
            out += bytes([len(text) // 16]) + text
        else:
            out += b"\0"
    return bytes(out)


class IcyServer(socketserver.ThreadingTCPServer):
    """Answers every GET with ``ICY 200 OK`` and ``body``; ``hold_open`` keeps the socket
    open after the body (a stall) until the server closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, body: bytes, *, hold_open: bool = False, tls: ssl.SSLContext | None = None
    ) -> None:
        self.body = body
        self.hold_open = hold_open
        self.tls = tls
        self.closing = threading.Event()
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _IcyHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self.tls is not None:  # the handshake runs in the handler's thread, on first read
            connection = self.tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that refuses the certificate ends its handshake: expected here

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/stream"

    def close(self) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class _IcyHandler(socketserver.StreamRequestHandler):
    server: IcyServer

    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        self.server.connections += 1
        try:
            self.wfile.write(
                b"ICY 200 OK\r\nicy-name:test\r\ncontent-type:audio/mpeg\r\n"
                + f"icy-br:128\r\nicy-metaint:{METAINT}\r\n\r\n".encode()
                + self.server.body
            )
            self.wfile.flush()
        except OSError:
            return
        if self.server.hold_open:
            self.server.closing.wait(60)


@pytest.fixture(scope="module")
def mp3_bytes(synth_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The synth as constant 128 kbit/s mp3 (16000 bytes a second), without tags."""
    path = tmp_path_factory.mktemp("mp3") / "cbr.mp3"
    ffmpeg_encode(
        synth_wav,
        *("-c:a", "libmp3lame", "-b:a", "128k", "-write_xing", "0", "-id3v2_version", "0"),
        str(path),
    )
    return path.read_bytes()


@needs_ffmpeg
def test_icy_titles_are_placed_at_their_byte_position(mp3_bytes: bytes) -> None:
    # Title "One" in the first metadata block, "Two" in the 10th: after 10 * 8192 bytes
    # of 128 kbit/s audio = 5.12 s.
    server = IcyServer(icy_body(mp3_bytes, {0: "One", 9: "Two"}), hold_open=True)
    source = NetworkSource(server.url, live=True, stall_timeout_s=30)
    reader = SourceReader(source)
    try:
        wait_until(lambda: source.title == "Two", timeout_s=60, what=reader.seen)
    finally:
        reader.close()
        server.close()
    titles = [(e.at_s, e.title) for e in reader.events if e.kind == "now_playing"]
    assert titles == [(0.0, "One"), (pytest.approx(10 * METAINT / 16000, abs=0.001), "Two")]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 (made by openssl) and a server context."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


@needs_ffmpeg
def test_an_https_station_is_read_once_its_certificate_is_trusted(
    mp3_bytes: bytes, certificate: tuple[Path, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, context = certificate
    server = IcyServer(icy_body(mp3_bytes, {0: "One", 9: "Two"}), hold_open=True, tls=context)
    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(UnavailableError) as refused:
            NetworkSource(server.url, connect_timeout_s=10)
        message = str(refused.value)
        assert "TLS certificate is not trusted" in message and "SSL_CERT_FILE" in message
        assert "\n" not in message
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        source = NetworkSource(server.url, connect_timeout_s=10, stall_timeout_s=30)
        assert source.live, "an ICY answer is a live station"
        reader = SourceReader(source)
        try:
            wait_until(lambda: source.title == "Two", timeout_s=60, what=reader.seen)
        finally:
            reader.close()
    finally:
        server.close()
    assert [e.title for e in reader.events if e.kind == "now_playing"] == ["One", "Two"]


class _TlsFolderServer(http.server.ThreadingHTTPServer):
    """Serves ``folder`` over https with ``context`` (a web server with a static file)."""

    def __init__(self, folder: Path, context: ssl.SSLContext) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        super().__init__(("127.0.0.1", 0), handler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # FFmpeg refusing the certificate ends the handshake: expected here

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


@needs_ffmpeg
def test_ffmpeg_checks_the_certificate_of_an_https_file(
    mp3_bytes: bytes,
    certificate: tuple[Path, ssl.SSLContext],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A file over https is read by FFmpeg itself, whose tls_verify is off by default."""
    cert, context = certificate
    (tmp_path / "a.mp3").write_bytes(mp3_bytes[: 3 * 16000])
    server = _TlsFolderServer(tmp_path, context)
    url = f"https://127.0.0.1:{server.server_address[1]}/a.mp3"
    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        untrusted = NetworkSource(url, live=False, fast=True, max_attempts=1)
        with pytest.raises(UnavailableError, match="after 1 attempts"):
            list(untrusted.blocks(threading.Event()))
        untrusted.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusted = NetworkSource(url, live=False, fast=True, max_attempts=1)
        try:
            blocks = list(trusted.blocks(threading.Event()))
        finally:
            trusted.close()
    finally:
        server.close()
    assert sum(b.samples.size for b in blocks) / 16000 == pytest.approx(3.0, abs=0.15)


@needs_ffmpeg
def test_a_stalled_stream_is_dropped_and_reconnected(mp3_bytes: bytes) -> None:
    server = IcyServer(icy_body(mp3_bytes[: 2 * 16000], {}), hold_open=True)
    source = NetworkSource(
        server.url, live=True, stall_timeout_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.2
    )
    reader = SourceReader(source)
    try:
        wait_until(lambda: source.stalls >= 2, timeout_s=60, what=reader.seen)
    finally:
        reader.close()
        server.close()
    assert server.connections >= 2
    down = [e for e in reader.events if e.kind == "source_down"]
    assert down and all(e.reason.startswith("stall") for e in down)
    assert "source_up" in reader.kinds()
    indexes = [b.index for b in reader.blocks]
    assert len(set(np.diff(indexes).tolist())) > 1, "the reconnect shows as an index jump"


@needs_ffmpeg
def test_a_server_that_answers_without_audio_is_a_failed_attempt_not_a_drop() -> None:
    server = IcyServer(b"")
    source = NetworkSource(server.url, live=True, max_attempts=3, backoff_initial_s=0.05)
    events: list[SourceEvent] = []
    source.on_event = events.append
    try:
        with pytest.raises(UnavailableError, match=r"no audio from .* after 3 attempts"):
            list(source.blocks(threading.Event()))
    finally:
        source.close()
        server.close()
    assert server.connections == 3
    status = source.status_fields()
    assert (status["connect_failures"], status["connects"], status["drops"]) == (3, 0, 0)
    assert events == [], "no source_down without audio having flowed"


# ---------------------------------------------------------------------------
# Parsing and argument checks
# ---------------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["pls", "m3u"])
def test_a_station_playlist_is_followed_to_its_first_stream(
    kind: str, synth_wav: Path, http_folder: tuple[Path, str]
) -> None:
    folder, base = http_folder
    ffmpeg_encode(synth_wav, "-t", "3", "-c:a", "libmp3lame", "-b:a", "128k", str(folder / "a.mp3"))
    listing = {
        "pls": f"[playlist]\nNumberOfEntries=2\nFile2={base}/b.mp3\nFile1={base}/a.mp3\n"
        "Title1=Test FM\nVersion=2\n",
        "m3u": f"#EXTM3U\n#EXTINF:-1,Test FM\n{base}/a.mp3\n{base}/b.mp3\n",
    }[kind]
    (folder / f"station.{kind}").write_text(listing)
    source = NetworkSource(f"{base}/station.{kind}", fast=True)
    try:
        assert source.url == f"{base}/a.mp3"
        blocks = list(source.blocks(threading.Event()))
    finally:
        source.close()
    assert sum(b.samples.size for b in blocks) / 16000 == pytest.approx(3.0, abs=0.15)


def test_a_station_playlist_without_a_stream_is_a_usage_error(
    http_folder: tuple[Path, str],
) -> None:
    folder, base = http_folder
    (folder / "empty.pls").write_text("[playlist]\nNumberOfEntries=0\n")
    with pytest.raises(UsageError, match=r"names no http\(s\) stream; give the stream's URL"):
        NetworkSource(f"{base}/empty.pls")


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("[playlist]\nFile1=http://a/1\nFile10=http://a/10\nFile2=https://a/2\n",
         ["http://a/1", "https://a/2", "http://a/10"]),
        ("[Playlist]\r\nfile1 = http://a/x\r\n", ["http://a/x"]),
        ("#EXTM3U\n#EXTINF:-1,FM\nhttp://a/live\n\nnot a url\nftp://a/x\n", ["http://a/live"]),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttp://a/seg1.ts\n", []),
        ("", []),
    ],
)  # fmt: skip
def test_station_list_urls(text: str, urls: list[str]) -> None:
    assert station_list_urls(text) == urls


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.02,\nseg0.ts\n#EXTINF:1.5,Title\n"
         "seg1.ts\n#extinf:2\nseg2.ts\n#EXT-X-ENDLIST\n", (0.0, 2.02, 3.52)),
        ("#EXTM3U\n#EXTINF:2,\na.ts\n#EXTINF:soon,\nb.ts\n", ()),  # not a number
        ("#EXTM3U\n#EXTINF:nan,\na.ts\n", ()),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n", ()),  # a master: no segments
    ],
)  # fmt: skip
def test_segment_starts_add_up_the_extinf_durations(text: str, starts: tuple[float, ...]) -> None:
    """Where a resumed VOD playlist is sought (``NetworkSource._resume_options``)."""
    assert segment_starts(text) == pytest.approx(starts)


@pytest.mark.parametrize(
    ("metadata", "title"),
    [
        (b"StreamTitle='Artist - Song';StreamUrl='http://x';", "Artist - Song"),
        (b"StreamTitle='';\0\0\0", ""),
        (b"StreamTitle='It's; here';StreamUrl='';", "It's; here"),
        (b"StreamTitle='Caf\xc3\xa9';", "Café"),
        (b"StreamTitle='Caf\xe9';", "Café"),
        (b"StreamUrl='x';", None),
    ],
)
def test_parse_stream_title(metadata: bytes, title: str | None) -> None:
    assert parse_stream_title(metadata) == title


@needs_ffmpeg
def test_unreachable_url_is_unavailable() -> None:
    with pytest.raises(UnavailableError, match=r"cannot open http://127\.0\.0\.1"):
        NetworkSource(f"http://127.0.0.1:{free_port()}/nothing.mp3", connect_timeout_s=5)


@needs_ffmpeg
def test_attempts_run_out_as_unavailable() -> None:
    source = NetworkSource(
        f"http://127.0.0.1:{free_port()}/x.mp3", live=True, max_attempts=2, backoff_initial_s=0.05
    )
    with pytest.raises(UnavailableError, match="after 2 attempts"):
        list(source.blocks(threading.Event()))
    assert source.status_fields()["connect_failures"] == 2


@needs_ffmpeg
def test_a_password_in_the_url_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://user:s3cret@127.0.0.1:{free_port()}/x.mp3"
    source = NetworkSource(url, live=True, max_attempts=2, backoff_initial_s=0.05)
    with pytest.raises(UnavailableError) as raised:
        list(source.blocks(threading.Event()))
    assert "s3cret" not in str(raised.value) and "user:***@" in str(raised.value)
    assert caplog.records and all("s3cret" not in r.getMessage() for r in caplog.records)
    assert source.name == "127.0.0.1-x"


@pytest.mark.parametrize(
    "kwargs",
    [{"sample_rate": 10}, {"block_seconds": 0}, {"stall_timeout_s": -1}, {"max_attempts": 0}],
)
def test_bad_settings_are_usage_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        NetworkSource("http://127.0.0.1:1/x.mp3", live=True, **kwargs)  # type: ignore[arg-type]


@needs_ffmpeg
def test_streamer_cli_sends_a_static_url_with_fast(
    synth_wav: Path, http_folder: tuple[Path, str]
) -> None:
    """``python -m streamer --url URL --fast``: every block of the file, then the end message."""
    import io

    import zmq

    import protocol
    from streamer.cli import main

    folder, base = http_folder
    ffmpeg_encode(synth_wav, "-c:a", "libmp3lame", "-b:a", "128k", str(folder / "song.mp3"))
    context = zmq.Context.instance()
    sink = StreamerSink(context)
    statuses: list[int] = []
    argv = ["--url", f"{base}/song.mp3", "--fast", "--stream-id", "url-test",
            "--endpoint", sink.endpoint]  # fmt: skip
    thread = threading.Thread(
        target=lambda: statuses.append(main(argv, stdout=io.StringIO(), stderr=io.StringIO())),
        daemon=True,
    )
    thread.start()
    try:
        seconds, ended = 0.0, False
        while sink.socket.poll(5000):
            message = sink.receive(0)
            if isinstance(message, protocol.EndOfStream):
                ended = True
                break
            assert message.stream == "url-test"
            seconds += message.samples.shape[0] / message.sample_rate
        assert ended
        thread.join(timeout=30)
        assert statuses == [0]
        duration = soundfile.info(str(synth_wav)).duration
        assert abs(seconds - duration) < 0.2, (seconds, duration)
    finally:
        sink.close()


def test_streamer_cli_unreachable_url_exits_3_with_one_line() -> None:
    import io

    from streamer.cli import main

    err = io.StringIO()
    status = main(["--url", f"http://127.0.0.1:{free_port()}/x.mp3"], stderr=err)
    assert status == 3
    assert err.getvalue().startswith("error: ") and err.getvalue().count("\n") == 1
