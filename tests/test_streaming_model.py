"""Streaming musicnn equals the network over the whole signal and stays close to exact windows."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model import log_mel
from model.architectures import build_musicnn, build_vgg
from model.streaming import StreamingMusicnn
from model.tagger import Tagger

FEATURE_ATOL = 1e-4  # float32 round-off of 'valid' vs 'same' convolutions, features up to ~100,
FEATURE_RTOL = 1e-4  # which also moves with the CPU's kernels (AVX-512: 1.5e-4 at a feature of 1.4)
PROBABILITY_ATOL = 1e-5  # same features through the same back end
# Streaming windows see real audio where the exact model zero-pads both edges of the window.
EXACT_MAX_DIFF = 0.15
EXACT_MEAN_DIFF = 0.01
LOOKAHEAD_FRAMES = 73  # 64 (128-frame temporal conv) + 3 x 3 (7-frame mid-end convs)


@pytest.fixture(scope="module")
def streaming(tagger: Tagger) -> StreamingMusicnn:
    return StreamingMusicnn(tagger.network, window_frames=tagger.contract.window_frames)


@pytest.fixture(scope="module")
def whole_signal(tagger: Tagger) -> keras.Model:
    """The tagger's network for any length, up to the mid-end features ('same' padding)."""
    network = build_musicnn(input_frames=None)
    network.set_weights(tagger.network.get_weights())
    return keras.Model(network.inputs[0], network.get_layer("midend").output)


def music_mel(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Log-mel frames of a music-like signal: kick, hi-hat, a chord per bar, a little noise."""
    sr = 16000
    t = np.arange(round(seconds * sr)) / sr
    beat = 60 / rng.uniform(80, 150)
    y = np.sin(2 * np.pi * 55 * t) * np.exp(-12 * (t % beat) / beat)
    y += 0.3 * rng.standard_normal(len(t)) * np.exp(-120 * (t % (beat / 2)) / beat)
    bar = (t // (4 * beat)).astype(int)
    roots = 110 * 2 ** (rng.integers(-5, 7, bar.max() + 1) / 12)
    for ratio in (1.0, 1.26, 1.5, 2.0):
        y += 0.25 * np.sin(2 * np.pi * roots[bar] * ratio * t)
    y += 0.01 * rng.standard_normal(len(t))
    return log_mel((0.9 * y / np.abs(y).max()).astype(np.float32))


def back_end(tagger: Tagger, features: np.ndarray) -> np.ndarray:
    """The network's pooling and dense layers over one window of mid-end features."""
    layer = tagger.network.get_layer
    pooled = np.concatenate([features.max(axis=0), features.mean(axis=0)])[None]
    x = layer("batch_normalization_9")(pooled, training=False)
    x = layer("batch_normalization_10")(layer("dense")(x), training=False)
    return np.asarray(layer("tags")(layer("dense_1")(x)))[0]


def push_in_chunks(
    streaming: StreamingMusicnn, mel: np.ndarray, sizes: list[int]
) -> tuple[np.ndarray, list[tuple[int, np.ndarray | None]]]:
    """Push ``mel`` in chunks; return all completed features and (frames seen, output) per push."""
    cache = streaming.new_cache()
    features, outputs, start = [], [], 0
    for size in sizes:
        chunk = mel[start : start + size]
        start += len(chunk)
        features += streaming.push_features([cache], [chunk])
        outputs.append((cache.frames_seen, cache.probabilities))
    return np.concatenate(features), outputs


def test_lookahead(streaming: StreamingMusicnn) -> None:
    assert streaming.lookahead_frames == LOOKAHEAD_FRAMES
    assert streaming.feature_channels == 753


@pytest.mark.parametrize("hop_frames", [1, 31, 62])
def test_features_equal_whole_signal(
    streaming: StreamingMusicnn,
    whole_signal: keras.Model,
    rng: np.random.Generator,
    hop_frames: int,
) -> None:
    mel = music_mel(8.0, rng)
    expected = np.asarray(whole_signal(mel[None], training=False))[0]
    features, _ = push_in_chunks(streaming, mel, [hop_frames] * (len(mel) // hop_frames + 1))
    # Every frame with its look-ahead available, the first ones included (zeros = 'same' padding).
    assert len(features) == len(mel) - LOOKAHEAD_FRAMES
    np.testing.assert_allclose(
        features, expected[: len(features)], rtol=FEATURE_RTOL, atol=FEATURE_ATOL
    )


def test_probabilities_pool_the_last_window(
    tagger: Tagger,
    streaming: StreamingMusicnn,
    whole_signal: keras.Model,
    rng: np.random.Generator,
) -> None:
    mel = music_mel(10.0, rng)
    expected = np.asarray(whole_signal(mel[None], training=False))[0]
    sizes = [int(size) for size in rng.integers(0, 90, 40)]
    _, outputs = push_in_chunks(streaming, mel, sizes)
    window = streaming.window_frames
    checked = 0
    for frames_seen, probabilities in outputs:
        end = frames_seen - LOOKAHEAD_FRAMES
        assert (probabilities is None) == (end < window)
        if probabilities is not None:
            reference = back_end(tagger, expected[end - window : end])
            np.testing.assert_allclose(probabilities, reference, atol=PROBABILITY_ATOL, rtol=0)
            checked += 1
    assert checked > 10


def test_close_to_exact_windows(
    tagger: Tagger, streaming: StreamingMusicnn, rng: np.random.Generator
) -> None:
    diffs = []
    for _ in range(3):
        mel = music_mel(12.0, rng)
        _, outputs = push_in_chunks(streaming, mel, [31] * (len(mel) // 31))
        ready = [(seen - LOOKAHEAD_FRAMES, p) for seen, p in outputs if p is not None]
        windows = np.stack([mel[end - streaming.window_frames : end] for end, _ in ready])
        exact = tagger.predict(windows)
        diffs.append(np.abs(np.stack([p for _, p in ready]) - exact))
    diff = np.concatenate(diffs)
    assert diff.max() <= EXACT_MAX_DIFF
    assert diff.mean() <= EXACT_MEAN_DIFF


def test_varied_push_sizes_equal_steady_hops(
    streaming: StreamingMusicnn, rng: np.random.Generator
) -> None:
    mel = music_mel(9.0, rng)
    sizes = [0, 1, 250, 0, 2, 7, 300, 3, 1, 64, 0, 5]
    sizes.append(len(mel) - sum(sizes))
    varied_features, varied = push_in_chunks(streaming, mel, sizes)
    steady_features, _ = push_in_chunks(streaming, mel, [1] * len(mel))
    np.testing.assert_allclose(
        varied_features, steady_features, rtol=FEATURE_RTOL, atol=FEATURE_ATOL
    )
    last_seen, last = varied[-1]
    assert last_seen == len(mel) and last is not None
    _, whole = push_in_chunks(streaming, mel, [len(mel)])
    assert whole[-1][1] is not None
    np.testing.assert_allclose(last, whole[-1][1], atol=PROBABILITY_ATOL, rtol=0)


def test_batched_streams_equal_separate(
    streaming: StreamingMusicnn, rng: np.random.Generator
) -> None:
    mels = [music_mel(7.0, rng) for _ in range(4)]
    batched = [streaming.new_cache() for _ in mels]
    separate = [streaming.new_cache() for _ in mels]
    offsets = [0, 10, 10, 57]  # streams started at different times
    steps = [[17, 31, 31, 3], [31, 31, 31, 31], [0, 62, 31, 31]] + [[31, 31, 62, 31]] * 9
    starts = list(offsets)
    for i, (mel, offset) in enumerate(zip(mels, offsets, strict=True)):
        for cache in (batched[i], separate[i]):
            streaming.push([cache], [mel[:offset]])
    for sizes in steps:
        chunks = [mel[s : s + n] for mel, s, n in zip(mels, starts, sizes, strict=True)]
        starts = [s + n for s, n in zip(starts, sizes, strict=True)]
        together = streaming.push(batched, chunks)
        alone = [
            streaming.push_one(cache, chunk) for cache, chunk in zip(separate, chunks, strict=True)
        ]
        for a, b in zip(together, alone, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, atol=PROBABILITY_ATOL, rtol=0)
    assert all(p is not None for p in together)


def test_rejects_other_networks_and_bad_frames(streaming: StreamingMusicnn) -> None:
    with pytest.raises(ValueError, match="not a musicnn"):
        StreamingMusicnn(build_vgg())
    with pytest.raises(ValueError, match=r"must have shape \(n, 96\)"):
        streaming.push_one(streaming.new_cache(), np.zeros((5, 40), np.float32))
    with pytest.raises(ValueError, match="caches but"):
        streaming.push([streaming.new_cache()], [])
