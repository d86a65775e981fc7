"""Where the windows' change points put music <-> talk splices, by speech weight.

    .venv/bin/python -m benchmarks.splice_change [--weights 0 1 2 3 5] [--scale 1.0]

Each update carries the point in its window's middle second where the sound
changes most (:func:`model.content.spectral_change`): the spectrum's change,
plus ``CHANGE_SPEECH_WEIGHT`` times the change of a speech probability: the VAD's
(``vad``), the speech/music network's (``network``), or their product, the
probability of talk the classifier uses (``vad x network``,
:func:`model.content.talk_over_time`).  Also the median distance of the chosen
point from its splice, over the splices that had a point within reach.
The as-run log (:mod:`monitor.asrun`) moves a music <-> talk boundary to the
strongest such point near its estimate.  This measures that step alone, on the
audio of tuning programmes (:func:`benchmarks.asrun_hour.tuning_programme`:
wesnoth music, synthetic music and song, espeak-ng talk; never ``../shared``):
for each splice between music and talk, the windows a hop apart (2.992 s, every
0.5 s from the programme's start, as the worker's) whose middle second comes
within reach classify their own audio, and the splice counts as found when the
strongest of their points from ``CHANGE_SNAP_SECONDS`` before it to
``CHANGE_SNAP_LATER_TO_TALK_SECONDS`` (to talk) or ``CHANGE_SNAP_SECONDS`` (to
music) after it lies within one hop (0.5 s) of it.

Weight 0 is the spectrum alone (the change points before the speech term), the
baseline every other row is compared with, in the same process.  The
programmes are those the weight was chosen on (seeds 11 cut and with 2 s
fade-outs, 5 with 3 s fade-outs, 21 with ``--rap 0.5``) and one held out (seed
3, cut and with 2 s fade-outs); ``--scale`` shortens them.  Skips (exit 0)
without wesnoth's music or espeak-ng.  About 4 minutes on the 2-core AMD EPYC.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

import numpy as np

from benchmarks.common import cpu_description, load_description

#: (name, minutes, seed, fade-out seconds, rap share, held out)
PROGRAMMES = (
    ("11 cut", 40.0, 11, 0.0, 0.0, False),
    ("11 fade 2 s", 40.0, 11, 2.0, 0.0, False),
    ("5 fade 3 s", 30.0, 5, 3.0, 0.0, False),
    ("21 rap", 30.0, 21, 0.0, 0.5, False),
    ("3 cut", 30.0, 3, 0.0, 0.0, True),
    ("3 fade 2 s", 30.0, 3, 2.0, 0.0, True),
)
WINDOW = 47872  # the worker's window: 2.992 s at 16 kHz
HOP = 8000  # 0.5 s


def splices(minutes: float, seed: int, fade: float, rap: float) -> tuple[np.ndarray, list]:
    """The programme's audio (outages left out) and its music <-> talk splices
    ``(seconds, "speech" or "music": what follows)``."""
    from benchmarks.asrun_hour import BLOCK, fade_out, tuning_programme

    items = tuning_programme(minutes, np.random.default_rng(seed), rap)
    fade_out(items, fade)
    parts, found, position, previous = [], [], 0, None
    for item in items:
        if item["kind"] == "outage":
            previous = None
            continue
        audio = item["audio"][: len(item["audio"]) // BLOCK * BLOCK]
        if {previous, item["kind"]} == {"music", "speech"}:
            found.append((position / 16000, item["kind"]))
        parts.append(audio)
        position += len(audio)
        previous = item["kind"]
    return np.concatenate(parts), found


def found_per_weight(
    audio: np.ndarray, at: list[tuple[float, str]], variants: list[tuple[str, float]]
) -> tuple[dict[tuple[str, float], int], dict[tuple[str, float], list[float]]]:
    """For each (speech source, weight): the splices whose strongest nearby change point
    lies within a hop, and how far from its splice each such point lies (seconds).

    Sources: ``vad`` (Silero VAD's frames), ``network`` (the speech/music network's
    patches, :meth:`model.inaspeech.SpeechMusicCnn.speech_over_time`) and ``vad x
    network`` (their product per frame, :func:`model.content.talk_over_time`).
    """
    from model.content import (
        change_score,
        load_content_classifier,
        spectral_change,
        talk_over_time,
    )
    from model.placement import CHANGE_SNAP_LATER_TO_TALK_SECONDS, CHANGE_SNAP_SECONDS

    classifier = load_content_classifier()
    assert classifier.cnn is not None
    hits = dict.fromkeys(variants, 0)
    errors: dict[tuple[str, float], list[float]] = {v: [] for v in variants}
    for splice_s, following in at:
        later = CHANGE_SNAP_LATER_TO_TALK_SECONDS if following == "speech" else CHANGE_SNAP_SECONDS
        reach = (splice_s - CHANGE_SNAP_SECONDS, splice_s + later)
        points: dict[tuple[str, float], list[tuple[float, float]]] = {v: [] for v in variants}
        first = max(0, int((reach[0] - 2.0) * 16000) // HOP)
        for start in range(first * HOP, int((reach[1] - 1.0) * 16000), HOP):
            x = audio[start : start + WINDOW]
            if len(x) < WINDOW:
                break
            vad = classifier.vad.frame_probabilities(x)
            _, middles, speech = classifier.cnn.speech_over_time(x)
            for source, w in variants:
                if source == "vad":
                    change = spectral_change(x, vad_probabilities=vad, speech_weight=w)
                elif source == "network":
                    change = spectral_change(x, speech_over_time=(middles, speech), speech_weight=w)
                else:
                    talk = talk_over_time(vad, (middles, speech))
                    change = spectral_change(x, speech_over_time=talk, speech_weight=w)
                if change is not None:
                    score = change_score(change.strength, change.speech, w)
                    points[(source, w)].append((start / 16000 + change.at_s, score))
        for v in variants:
            near = [(score, s) for s, score in points[v] if reach[0] <= s <= reach[1]]
            if near:
                errors[v].append(abs(max(near)[1] - splice_s))
            if near and abs(max(near)[1] - splice_s) <= 0.5:
                hits[v] += 1
    return hits, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.splice_change", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 5.0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="shorten the programmes by this factor (1)"
    )
    args = parser.parse_args(argv)
    weights = sorted(set([0.0, *args.weights]))
    variants = [("vad", 0.0)] + [
        (source, w) for source in ("vad", "network", "vad x network") for w in weights if w > 0
    ]
    if shutil.which("espeak-ng") is None:
        print("skipped: espeak-ng is not installed (apt-get install espeak-ng)")
        return 0
    from tagstream.errors import UnavailableError
    from training.tune_content import wesnoth_tracks

    try:
        wesnoth_tracks()
    except UnavailableError as exc:
        print(f"skipped: {exc}")
        return 0
    print(cpu_description())
    print(load_description())
    started = time.monotonic()
    columns: list[tuple[str, bool, int, dict[tuple[str, float], int]]] = []
    all_errors: dict[tuple[str, float], list[float]] = {}
    for name, minutes, seed, fade, rap, held_out in PROGRAMMES:
        audio, at = splices(minutes * args.scale, seed, fade, rap)
        hits, errors = found_per_weight(audio, at, variants)
        columns.append((name, held_out, len(at), hits))
        for v in variants:
            all_errors.setdefault(v, []).extend(errors[v])
        print(f"  {name}: {len(at)} splices", file=sys.stderr, flush=True)
    print()
    print("music <-> talk splices with the strongest change point within one hop (0.5 s)")
    header = f"{'speech, weight':>20s}" + "".join(f"{n:>13s}" for n, *_ in columns)
    print(header + f"{'chosen on':>12s}{'held out':>12s}{'vs 0':>8s}{'median |error| s':>18s}")
    for v in variants:
        cells = "".join(f"{f'{hits[v]}/{n}':>13s}" for _, _, n, hits in columns)
        chosen = sum(hits[v] for _, held, _, hits in columns if not held)
        held = sum(hits[v] for _, h, _, hits in columns if h)
        n_chosen = sum(n for _, h, n, _ in columns if not h)
        n_held = sum(n for _, h, n, _ in columns if h)
        base = sum(hits[("vad", 0.0)] for *_, hits in columns)
        ratio = (chosen + held) / base if base else float("nan")
        name = f"{'none' if v[1] == 0 else v[0]}, {v[1]:g}"
        totals = f"{f'{chosen}/{n_chosen}':>12s}{f'{held}/{n_held}':>12s}"
        median = float(np.median(all_errors[v])) if all_errors[v] else float("nan")
        print(f"{name:>20s}{cells}{totals}{ratio:>7.2f}x{median:>18.3f}")
    print()
    print(f"took {time.monotonic() - started:.0f} s")
    print(load_description())
    return 0


if __name__ == "__main__":
    sys.exit(main())
