"""Prometheus metrics and /healthz of the worker and the streamer, scraped over real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import soundfile
import zmq
from helpers import DEADLINE_S, Processes, StreamerSink, frames_of, free_port, wait_until
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from config import load_config
from inference import Worker
from protocol import EndOfStream, encode_audio, encode_end
from tagstream.metrics import MetricsServer


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_worker_metrics_and_health_while_tagging(
    tmp_path: Path, tagger: Any, context: zmq.Context[Any], rng: np.random.Generator
) -> None:
    port = free_port()
    config = load_config(
        overrides={
            "inference.input_endpoint": f"ipc://{tmp_path}/in",
            "inference.publish_endpoint": f"ipc://{tmp_path}/out",
            "inference.hop_seconds": 1.0,
            "metrics.worker_port": port,
        }
    )
    worker = Worker(config, tagger=tagger)
    base = f"http://127.0.0.1:{port}"
    try:
        worker.start()
        status, body = get(base + "/healthz")  # model loaded, loop not running yet
        assert status == 503 and json.loads(body)["loop_alive"] is False
        thread = worker.run_in_thread()
        wait_until(lambda: get(base + "/healthz")[0] == 200, "a healthy worker")
        health = json.loads(get(base + "/healthz")[1])
        assert health["status"] == "ok" and health["model"] == "MSD_musicnn"
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(worker.input_endpoint)
        y = (0.3 * rng.standard_normal(16000 * 5)).astype(np.float32)
        for frame in frames_of(y, stream="metrics:a", start_time=time.time()):
            push.send_multipart(encode_audio(frame))
        push.send_multipart([b"\xc1"])  # not msgpack: rejected, reason "header"
        push.send_multipart([msgpack.packb({"version": 7, "kind": "end"})])  # reason "version"
        # Wait on the scrape itself (every message counted, both rejects, two updates
        # published), then check that same scrape: no race with the worker's counters.
        header = ("tagstream_worker_rejected_messages_total", (("reason", "header"),))
        version = ("tagstream_worker_rejected_messages_total", (("reason", "version"),))
        got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        def scraped_all() -> bool:
            status, body = get(base + "/metrics")
            assert status == 200
            got.clear()
            got.update(samples(body))
            return (
                got.get(("tagstream_worker_messages_total", ()), 0) >= 52
                and got.get(header, 0) >= 1
                and got.get(version, 0) >= 1
                and got.get(("tagstream_worker_latency_seconds_count", ()), 0) >= 2
                and got.get(("tagstream_worker_windows_total", ()), 0) >= 2
                and got.get(("tagstream_worker_model_seconds_count", ()), 0) >= 1
            )

        wait_until(scraped_all, "52 messages, 2 rejects and 2 updates in /metrics")
        assert got[("tagstream_worker_streams", ())] == 1
        assert got[("tagstream_worker_messages_total", ())] == 52
        assert got[("tagstream_worker_model_seconds_sum", ())] > 0
        assert got[header] == 1 and got[version] == 1
        assert got[("tagstream_worker_drops_total", (("reason", "refused"),))] == 0
        push.send_multipart(encode_end(EndOfStream(stream="metrics:a", seq=50)))
        push.close(linger=0)
        assert get(base + "/nothing")[0] == 404
        worker.stop()
        thread.join(timeout=DEADLINE_S)
        status, body = get(base + "/healthz")
        assert status == 503 and json.loads(body)["status"] == "unavailable"
    finally:
        worker.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/healthz", timeout=5)  # closed with the worker


def test_metrics_server_serves_health_from_its_check_and_closes_twice() -> None:
    answers: list[tuple[bool, dict[str, Any]]] = [(True, {"streams": 3}), (False, {})]

    def health() -> tuple[bool, dict[str, Any]]:
        if not answers:
            raise RuntimeError("check failed")
        return answers.pop(0)

    server = MetricsServer(CollectorRegistry(), port=free_port(), health=health)
    server.start()
    try:
        status, body = get(server.url + "/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok", "streams": 3}
        assert get(server.url + "/healthz")[0] == 503
        status, body = get(server.url + "/healthz?verbose=1")  # a raising check is unhealthy
        assert status == 503 and "check failed" in json.loads(body)["error"]
        assert get(server.url + "/metrics")[0] == 200
    finally:
        server.close()
        server.close()
    with pytest.raises(ValueError, match="port=70000"):
        MetricsServer(CollectorRegistry(), port=70000, health=health)


def test_metrics_are_off_by_default() -> None:
    config = load_config()
    assert config.metrics.worker_port == 0 and config.metrics.streamer_port == 0
    assert config.metrics.bind == "127.0.0.1"


def test_streamer_metrics_while_streaming(
    tmp_path: Path, processes: Processes, context: zmq.Context[Any]
) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f"[metrics]\nstreamer_port = {port}\n")
    wav = tmp_path / "long.wav"
    soundfile.write(wav, np.zeros(16000 * 30, dtype=np.float32), 16000)
    sink = StreamerSink(context)
    process = processes.start(
        "streamer", "streamer", "--file", str(wav), "--config", str(config),
        "--endpoint", sink.endpoint, "--stream-id", "metrics:s",
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(5):
        sink.receive(int(DEADLINE_S * 1000))

    def sent() -> float:
        return samples(get(base + "/metrics")[1])[("tagstream_streamer_blocks_sent_total", ())]

    wait_until(lambda: sent() >= 5, "5 blocks counted")
    got = samples(get(base + "/metrics")[1])
    assert got[("tagstream_streamer_drops_total", (("where", "send"),))] == 0
    assert ("tagstream_streamer_queue_depth", ()) in got
    status, body = get(base + "/healthz")
    assert status == 200 and json.loads(body)["stream"] == "metrics:s"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=DEADLINE_S) == 0, processes.log("streamer")
