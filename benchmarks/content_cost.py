"""What the content classifier's parts cost per window, against its speech/music part.

    .venv/bin/python -m benchmarks.content_cost [--repeats N]

Times, on one thread and the worker's 2.992 s window of synthesised music (so it
runs anywhere; no ``../shared`` needed), the median of ``--repeats`` calls of:

* the speech/music decision without inaSpeechSegmenter's network (Silero VAD,
  pyAudioAnalysis's speech/music SVM, the signal measures, the logistic model:
  :meth:`model.content.ContentClassifier.speech_probability` with ``network=False``,
  ``[content] network = false``), the baseline;
* the decision as shipped, with the network;
* its three models on their own: Silero VAD, the SVM with its features
  (:meth:`model.pyaudioanalysis.SpeechMusicSvm.speech_probability`) and the network
  with its spectrum (:meth:`model.inaspeech.SpeechMusicCnn.speech_probability`);
* :func:`model.content.spectral_change` on its own (computing its own spectra);
* :meth:`~model.content.ContentClassifier.classify`, everything an update carries
  (the two share the window's spectra), with and without the network.

The ratio column is each against the baseline, measured in the same process, and
the first line names the CPU.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks.common import cpu_description, load_description, median_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.content_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=200, help="calls per row (200)")
    args = parser.parse_args(argv)

    from model.content import (
        SAMPLE_RATE,
        ContentClassifier,
        load_content_classifier,
        spectral_change,
    )
    from tools.demo_audio import synthetic_music

    classifier = load_content_classifier()
    cnn = classifier.cnn
    assert cnn is not None
    smaller = ContentClassifier(vad=classifier.vad, svm=classifier.svm, network=False)
    window = int(2.992 * SAMPLE_RATE)
    samples = (0.3 * synthetic_music(3.0, rng=np.random.default_rng(0)))[:window]
    samples = samples.astype(np.float32)
    classifier.classify(samples)  # warm up: ONNX Runtime sessions, filterbanks
    rows = [
        ("decision without network (baseline)", lambda: smaller.speech_probability(samples)),
        ("speech/music decision (shipped)", lambda: classifier.speech_probability(samples)),
        ("  Silero VAD alone", lambda: classifier.vad.frame_probabilities(samples)),
        ("  speech/music SVM alone", lambda: classifier.svm.speech_probability(samples)),
        ("  speech/music network alone", lambda: cnn.speech_probability(samples)),
        ("spectral_change alone", lambda: spectral_change(samples)),
        ("classify: all of it", lambda: classifier.classify(samples)),
        ("classify without the network", lambda: smaller.classify(samples)),
    ]
    print(cpu_description())
    print(load_description())
    print(f"one 2.992 s window at {SAMPLE_RATE} Hz, median of {args.repeats} calls, one thread")
    print(f"{'':36s}{'ms':>8s}{'ratio':>8s}")
    baseline = None
    for name, call in rows:
        ms = median_ms(call, args.repeats)
        baseline = baseline or ms
        print(f"{name:36s}{ms:8.2f}{ms / baseline:8.2f}")
    print(load_description())
    return 0


if __name__ == "__main__":
    sys.exit(main())
