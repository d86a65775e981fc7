"""CURVE security (protocol.security, tools.keys) and message-size limits, with real sockets.

A real worker (real model, real ZeroMQ over tcp) serves with CURVE on; an
allowed client sends audio and reads tags, a client whose key is not in the
allowed folder (and a client without CURVE) can do neither.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import DEADLINE_S, ROOT, audio_messages, wait_until

from config import SecurityConfig, load_config
from inference import Worker, WorkerError
from protocol import decode_update
from protocol.security import (
    AuthenticationError,
    CurveSettings,
    SecurityError,
    curve_enabled,
    is_local_endpoint,
    secure_client,
)
from protocol.subscriber import Subscriber, SubscriberError
from streamer import Sender
from streamer.cli import main as streamer_main
from tagstream.errors import ExitStatus
from tools import keys


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.3.2.1:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/tagstream-in", True),
        ("inproc://worker", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.20:5555", False),
        ("tcp://worker.example.org:5555", False),
        ("tcp://[2001:db8::1]:5555", False),
        ("tcp://eth0;192.0.2.1:5555", False),
        ("pgm://eth0;239.192.1.1:5555", False),
    ],
)
def test_is_local_endpoint(endpoint: str, local: bool) -> None:
    assert is_local_endpoint(endpoint) is local


def test_auto_mode_is_on_beyond_loopback_or_when_keys_are_set() -> None:
    auto = SecurityConfig()
    assert not curve_enabled(auto, "tcp://127.0.0.1:1", role="server")
    assert curve_enabled(auto, "tcp://0.0.0.0:1", role="server")
    assert curve_enabled(auto, "tcp://10.0.0.2:1", role="client")
    assert curve_enabled(SecurityConfig(server_secret_key="k"), "ipc:///x", role="server")
    assert curve_enabled(SecurityConfig(client_secret_key="k"), "ipc:///x", role="client")
    assert curve_enabled(SecurityConfig(curve="on"), "ipc:///x", role="client")
    assert not curve_enabled(SecurityConfig(curve="off"), "tcp://0.0.0.0:1", role="server")


def test_the_transport_takes_any_settings_value_and_never_reads_settings_itself() -> None:
    for settings in (CurveSettings(), SecurityConfig()):
        assert not curve_enabled(settings, "ipc:///x", role="client")
        assert curve_enabled(settings, "tcp://10.0.0.2:1", role="client")
    with pytest.raises(SecurityError, match=r"security\.curve: expected one of auto, on, off"):
        curve_enabled(CurveSettings(curve="maybe"), "ipc:///x", role="server")
    assert SecurityError("x").status == ExitStatus.USAGE
    imported = subprocess.run(
        [sys.executable, "-c",
         "import sys, protocol.security, protocol.subscriber; print('config' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.stdout.strip() == "False", imported.stderr


def test_worker_refuses_to_bind_beyond_loopback_without_keys() -> None:
    config = load_config(overrides={"inference.input_endpoint": "tcp://0.0.0.0:*"})
    worker = Worker(config)  # the check comes before the model loads
    with pytest.raises(WorkerError) as excinfo:
        worker.start()
    worker.close()
    message = str(excinfo.value)
    assert "security.server_secret_key is not set" in message
    assert "tcp://0.0.0.0:*" in message and "\n" not in message


def test_clients_refuse_to_connect_beyond_loopback_without_keys(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match=r"security\.client_secret_key is not set"):
        Sender("tcp://192.0.2.1:5555")
    with pytest.raises(SecurityError, match=r"security\.client_secret_key is not set"):
        Subscriber("tcp://192.0.2.1:5556")
    with pytest.raises(SubscriberError, match="no endpoint to subscribe to") as excinfo:
        Subscriber([])
    assert excinfo.value.status == ExitStatus.USAGE
    wav = tmp_path / "a.wav"
    import soundfile

    soundfile.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    err = io.StringIO()
    status = streamer_main(["--file", str(wav), "--endpoint", "tcp://192.0.2.1:5555"], stderr=err)
    assert status == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: security.client_secret_key is not set")


def test_keys_generate_writes_a_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = io.StringIO()
    assert keys.main(["generate", "--out", str(tmp_path), "--name", "w"], stdout=out) == 0
    public, secret = zmq.auth.load_certificate(tmp_path / "w.key_secret")
    assert secret is not None and len(public) == len(secret) == 40
    assert zmq.auth.load_certificate(tmp_path / "w.key") == (public, None)
    assert (tmp_path / "w.key_secret").stat().st_mode & 0o777 == 0o600
    err = io.StringIO()
    assert keys.main(["generate", "--out", str(tmp_path), "--name", "w"], stderr=err) == 2
    assert "exists already" in err.getvalue()
    assert keys.main(["generate", "--out", str(tmp_path), "--name", "w", "--force"]) == 0
    assert keys.main(["generate", "--out", str(tmp_path), "--name", "../x"], stderr=err) == 2


# -- a real worker with CURVE on ------------------------------------------------------------


@pytest.fixture
def key_folder(tmp_path: Path) -> Path:
    for name in ("worker", "studio", "intruder"):
        keys.generate(tmp_path, name=name)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "studio.key").write_bytes((tmp_path / "studio.key").read_bytes())
    return tmp_path


def client_settings(folder: Path, name: str) -> SecurityConfig:
    return SecurityConfig(
        curve="on",
        client_secret_key=str(folder / f"{name}.key_secret"),
        server_public_key=str(folder / "worker.key"),
    )


@pytest.fixture
def secure_worker(tagger: Any, key_folder: Path) -> Iterator[Worker]:
    config = load_config(
        overrides={
            "inference.input_endpoint": "tcp://127.0.0.1:*",
            "inference.publish_endpoint": "tcp://127.0.0.1:*",
            "inference.hop_seconds": 3.0,
            "security.curve": "on",
            "security.server_secret_key": str(key_folder / "worker.key_secret"),
            "security.allowed_clients_dir": str(key_folder / "allowed"),
        }
    )
    worker = Worker(config, tagger=tagger)
    worker.start()
    worker.run_in_thread()
    yield worker
    worker.close()


def socket_pair(
    context: zmq.Context[Any], worker: Worker, settings: SecurityConfig | None
) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    push, sub = context.socket(zmq.DEALER), context.socket(zmq.SUB)  # CURVE input: ROUTER
    for sock, endpoint in ((push, worker.input_endpoint), (sub, worker.publish_endpoint)):
        sock.setsockopt(zmq.LINGER, 0)
        if settings is not None:
            assert secure_client(sock, settings, endpoints=[endpoint])
        sock.connect(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    return push, sub


def offer(push: zmq.Socket[Any], message: list[Any]) -> None:
    """Send without blocking from a client the worker may refuse.

    Before the CURVE handshake ends the DEALER queues the message on its pipe; once the
    worker has refused the handshake the pipe is gone and the send would block, which
    with NOBLOCK is ``zmq.Again``. Which one happens is a race; neither may reach the worker.
    """
    with contextlib.suppress(zmq.Again):
        push.send_multipart(message, zmq.NOBLOCK)


def test_only_allowed_clients_send_audio_and_read_tags(
    secure_worker: Worker, key_folder: Path, rng: np.random.Generator
) -> None:
    context: zmq.Context[Any] = zmq.Context()
    try:
        allowed_push, allowed_sub = socket_pair(
            context, secure_worker, client_settings(key_folder, "studio")
        )
        intruder_push, intruder_sub = socket_pair(
            context, secure_worker, client_settings(key_folder, "intruder")
        )
        plain_push, plain_sub = socket_pair(context, secure_worker, None)
        y = (0.3 * rng.standard_normal(16000 * 4)).astype(np.float32)
        for push, stream in ((intruder_push, "intruder"), (plain_push, "plain")):
            for message in audio_messages(y, stream):
                offer(push, message)  # queued until a handshake that fails, or refused
        sent = 0
        received = []
        deadline = time.monotonic() + DEADLINE_S
        while not received and time.monotonic() < deadline:  # the SUB joins late: resend
            for message in audio_messages(y, f"studio:{sent}"):
                allowed_push.send_multipart(message)
            sent += 1
            while allowed_sub.poll(1000):
                received.append(decode_update(allowed_sub.recv_multipart()))
        assert received, "the allowed client got no update"
        assert {u.stream for u in received} <= {f"studio:{i}" for i in range(sent)}
        # A positive barrier: one more stream from the allowed client, sent after everything
        # else; once its update is back, the worker has read whatever it was going to get.
        for message in audio_messages(y, "studio:barrier"):
            allowed_push.send_multipart(message)
        sent += 1
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and all(u.stream != "studio:barrier" for u in received):
            if allowed_sub.poll(1000):
                received.append(decode_update(allowed_sub.recv_multipart()))
        assert received[-1].stream == "studio:barrier", "the barrier stream got no update"
        per_stream = len(audio_messages(y, "x"))
        # its end message comes after its update
        stats = secure_worker.wait_for(
            lambda s: s.messages >= sent * per_stream, timeout_s=DEADLINE_S
        )
        assert stats.messages == sent * per_stream, "a refused client's message got through"
        assert set(stats.rejected) <= {"auth"}  # the intruder's handshakes, no message
        assert not intruder_sub.poll(100) and not plain_sub.poll(100)
    finally:
        context.destroy(linger=0)


def test_a_message_over_the_size_limit_never_reaches_the_worker(
    secure_worker: Worker, key_folder: Path, rng: np.random.Generator
) -> None:
    """ZMQ_MAXMSGSIZE on the worker's input: the peer is dropped before the big frame is buffered.

    libzmq hands over the frames that came before the oversized one as a
    truncated message (here the lone header), which the protocol rejects as
    ``frames``; the 17 MiB frame itself is never received.
    """
    from inference.worker import MAX_MESSAGE_BYTES

    context: zmq.Context[Any] = zmq.Context()
    settings = client_settings(key_folder, "studio")
    try:
        big_push, _ = socket_pair(context, secure_worker, settings)
        header = audio_messages(np.zeros(8000, np.float32), "big")[0][0]
        big_push.send_multipart([header, bytes(MAX_MESSAGE_BYTES + 1)])
        push, _sub = socket_pair(context, secure_worker, settings)
        y = (0.3 * rng.standard_normal(16000 * 4)).astype(np.float32)
        messages = audio_messages(y, "after-big")
        for message in messages:
            push.send_multipart(message)
        # A positive barrier: a second stream sent after the first on the same socket.
        for message in audio_messages(y, "barrier"):
            push.send_multipart(message)
        stats = secure_worker.wait_for(lambda s: s.ended >= 2, timeout_s=DEADLINE_S)
        assert stats.ended == 2
        assert stats.messages - stats.rejected_total == 2 * len(messages)
        assert set(stats.rejected) <= {"frames"}  # at most the truncated header
    finally:
        context.destroy(linger=0)


# -- a refused handshake is never silent ----------------------------------------------------


def test_a_refused_key_is_logged_with_its_address_and_counted(
    secure_worker: Worker,
    key_folder: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import protocol.security

    monkeypatch.setattr(protocol.security, "AUTH_LOG_INTERVAL_S", 3600.0)  # one line, then quiet
    caplog.set_level(logging.WARNING, logger="protocol.security")
    context: zmq.Context[Any] = zmq.Context()
    try:
        intruders = [
            socket_pair(context, secure_worker, client_settings(key_folder, "intruder"))[0]
            for _ in range(3)
        ]
        for push in intruders:
            offer(push, audio_messages(np.zeros(1600, np.float32), "x")[0])
        stats = wait_until(
            lambda: (s := secure_worker.stats()).rejected.get("auth", 0) >= 3 and s,
            lambda: f"three refused handshakes counted, have {secure_worker.stats().rejected}",
        )
    finally:
        context.destroy(linger=0)
    assert set(stats.rejected) == {"auth"}
    assert stats.messages == 0
    registry = secure_worker.metrics.registry
    counted = registry.get_sample_value(
        "tagstream_worker_rejected_messages_total", {"reason": "auth"}
    )
    assert counted is not None and counted >= 3
    lines = [r.getMessage() for r in caplog.records if "rejected CURVE handshake" in r.getMessage()]
    assert len(lines) == 1, lines  # rate-limited
    public = zmq.auth.load_certificate(key_folder / "intruder.key")[0].decode()
    assert "peer=127.0.0.1 " in lines[0] and f"client_key={public} " in lines[0]
    assert f"security.allowed_clients_dir={key_folder / 'allowed'}" in lines[0]


def test_a_subscriber_with_a_refused_key_says_so_instead_of_waiting(
    secure_worker: Worker, key_folder: Path
) -> None:
    settings = client_settings(key_folder, "intruder")
    with (
        Subscriber(secure_worker.publish_endpoint, security=settings) as subscriber,
        pytest.raises(AuthenticationError) as excinfo,
    ):
        subscriber.receive(timeout_s=DEADLINE_S)  # raises long before: never None
    message = str(excinfo.value)
    assert message.startswith(
        "authentication failed: the worker does not accept this client key; copy "
        f"{key_folder / 'intruder.key'} into the worker's security.allowed_clients_dir"
    )
    assert excinfo.value.status == ExitStatus.USAGE and "\n" not in message
    # The allowed key on the same worker is not refused.
    with Subscriber(
        secure_worker.publish_endpoint, security=client_settings(key_folder, "studio")
    ) as allowed:
        watch = allowed._handshake
        assert watch is not None
        wait_until(lambda: allowed.receive(timeout_s=0.1) is None and watch.succeeded, "handshake")


def test_a_wrong_server_key_fails_the_handshake_with_a_message(
    secure_worker: Worker, key_folder: Path
) -> None:
    settings = dataclasses.replace(
        client_settings(key_folder, "studio"),
        server_public_key=str(key_folder / "intruder.key"),  # not the worker's key
    )
    with (
        Subscriber(secure_worker.publish_endpoint, security=settings) as subscriber,
        pytest.raises(AuthenticationError, match=r"security\.server_public_key"),
    ):
        subscriber.receive(timeout_s=DEADLINE_S)


def test_the_streamer_with_a_refused_key_exits_with_one_line(
    secure_worker: Worker, key_folder: Path, tmp_path: Path
) -> None:
    import soundfile

    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(16000 * 10, dtype=np.float32), 16000)  # 100 blocks
    config = tmp_path / "intruder.toml"
    config.write_text(
        "[streamer]\nsend_hwm = 10\n"  # a --fast file fills it and waits: the check runs
        '[security]\ncurve = "on"\n'
        f'client_secret_key = "{key_folder / "intruder.key_secret"}"\n'
        f'server_public_key = "{key_folder / "worker.key"}"\n'
    )
    err = io.StringIO()
    status = streamer_main(
        ["--config", str(config), "--file", str(wav), "--fast",
         "--endpoint", secure_worker.input_endpoint],
        stderr=err,
    )  # fmt: skip
    lines = err.getvalue().strip().splitlines()
    assert status == ExitStatus.USAGE, lines
    assert len(lines) == 1 and lines[0].startswith(
        "error: authentication failed: the worker does not accept this client key;"
    ), lines
    assert secure_worker.stats().messages == 0


def test_tools_subscribe_with_a_refused_key_exits_with_one_line(
    secure_worker: Worker, key_folder: Path, tmp_path: Path
) -> None:
    from tools.subscribe import main as subscribe_main

    config = tmp_path / "intruder.toml"
    config.write_text(
        '[security]\ncurve = "on"\n'
        f'client_secret_key = "{key_folder / "intruder.key_secret"}"\n'
        f'server_public_key = "{key_folder / "worker.key"}"\n'
    )
    out, err = io.StringIO(), io.StringIO()
    status = subscribe_main(
        ["--config", str(config), "--endpoint", secure_worker.publish_endpoint],
        stdout=out,
        stderr=err,
    )
    lines = err.getvalue().strip().splitlines()
    assert status == ExitStatus.USAGE, lines
    assert len(lines) == 1 and lines[0].startswith(
        "error: authentication failed: the worker does not accept this client key;"
    ), lines
    assert out.getvalue() == ""
