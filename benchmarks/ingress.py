"""Input-socket throughput: the worker's raw-ZMTP ingress against a plain ROUTER socket.

Without CURVE the worker parses ZMTP itself (:class:`inference.ingress.StreamIngress`)
so that no peer can make it hold an unbounded multipart message; this measures
what that costs per message against libzmq framing the same messages
(:class:`inference.ingress.RouterIngress`, the baseline, same process, same
messages: 0.1 s blocks of 16 kHz float32 audio as the streamer sends them).

    python -m benchmarks.ingress [--messages 20000] [--senders 4]

A real-time stream sends 10 messages a second, so ``messages/s / 10`` is how
many streams the input path alone could carry (the model costs far more).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import zmq

from benchmarks.common import cpu_description
from inference.ingress import open_ingress
from protocol import AudioFrame, encode_audio

MAX_MESSAGE_BYTES = 17 * 2**20


def _messages(stream: str, count: int) -> list[list[bytes]]:
    samples = np.zeros((1600, 1), np.float32)
    frame = AudioFrame(
        stream=stream,
        seq=0,
        capture_time=time.time(),
        sample_rate=16000,
        channels=1,
        sample_format="f32",
        samples=samples,
    )
    message = [bytes(part) for part in encode_audio(frame)]
    return [message] * count


def _run(kind: str, messages: int, senders: int) -> tuple[float, float]:
    """Messages per second and MB/s received by one ingress of ``kind``."""
    context = zmq.Context()
    endpoint = "tcp://127.0.0.1:0"
    ingress = open_ingress(
        context,
        endpoint,
        curve=kind == "pull",  # RouterIngress (libzmq framing); CURVE itself is not on here
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_part_bytes=MAX_MESSAGE_BYTES,
        receive_hwm=1000,
    )
    address = ingress.socket.getsockopt_string(zmq.LAST_ENDPOINT)
    per_sender = messages // senders
    payload = _messages("bench", per_sender)
    size = sum(len(part) for part in payload[0])

    def send() -> None:
        push = context.socket(zmq.DEALER)  # the streamer's socket; both ingresses take it
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(address)
        for message in payload:
            push.send_multipart(message)
        push.close()

    threads = [threading.Thread(target=send) for _ in range(senders)]
    received = 0
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    total = per_sender * senders
    while received < total:
        if not ingress.socket.poll(5000):
            raise RuntimeError(f"{kind}: only {received} of {total} messages arrived")
        for _ in ingress.receive(256):
            received += 1
    elapsed = time.perf_counter() - start
    for thread in threads:
        thread.join()
    ingress.socket.close(linger=0)
    context.term()
    return received / elapsed, received * size / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingress", description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(cpu_description())
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeats):  # interleaved, best of each: a busy machine hurts both
        for kind in ("pull", "zmtp"):
            result = _run(kind, args.messages, args.senders)
            if kind not in best or result[0] > best[kind][0]:
                best[kind] = result
    print(f"{args.messages} messages of 0.1 s (6.4 kB of audio) from {args.senders} senders")
    print(f"{'ingress':<28} {'messages/s':>11} {'MB/s':>7} {'streams':>8} {'ratio':>6}")
    base = best["pull"][0]
    for kind, label in (("pull", "ROUTER (libzmq framing)"), ("zmtp", "raw ZMTP (bounded)")):
        rate, mb = best[kind]
        print(f"{label:<28} {rate:>11.0f} {mb:>7.1f} {rate / 10:>8.0f} {rate / base:>6.2f}")


if __name__ == "__main__":
    main()
