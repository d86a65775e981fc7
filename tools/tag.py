"""Tag audio files with the 50 Million Song Dataset tags.

    python -m tools.tag PATH... [--top K] [--json] [--model NAME|PATH] [--hop-seconds S]
                                [--backend onnxruntime] [--precision bfloat16]

``PATH`` is an audio file, a folder (its audio files, recursively, in sorted
order) or ``-`` (paths on standard input, one per line).  ``--top K`` limits
the tags printed per file, with ``--json`` too (the file's and each window's
K most probable, most probable first); for archives use ``python -m tools.archive``.

Each file is cut into windows of the model's length (3 s for the pretrained
models), without overlap unless ``--hop-seconds`` says otherwise; a file's tags
are the mean probability over its windows.  A file shorter than one window is
refused (``--pad`` pads it with silence instead, with a warning).  A file that
fails prints one line on stderr and the others are still tagged.  Files are
read in blocks, so memory does not grow with their length.

The library behind it is :mod:`model.tagging` (``tag_file``, ``tag_files``).

Exit status (:class:`tagstream.errors.ExitStatus`): 0 every file tagged, 1 some
file failed, 2 usage or config error, 3 the model could not be loaded,
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from typing import TextIO

from model.tagging import FileTags, FileTagsJSON, hop_frames_for, tag_files
from tagstream import cli
from tagstream.errors import ExitStatus

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.tag",
        "Tag audio files (wav, flac, ogg, mp3) with the 50 MSD Last.fm tags.",
        epilog="Exit status: 0 all tagged, 1 some file failed, 2 usage or config error, "
        "3 model not loaded, 130 interrupted.",
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="PATH",
        help="audio files, folders (recursive) or - for paths on stdin",
    )
    parser.add_argument("--top", type=int, metavar="K", help="top tags to print per file")
    parser.add_argument("--json", action="store_true", help="one JSON object per file and line")
    cli.setting_flag(
        parser,
        "--model",
        key="model.name",
        metavar="NAME|PATH",
        help="MSD_musicnn, MSD_vgg or a folder",
    )
    cli.setting_flag(
        parser,
        "--backend",
        key="model.backend",
        help="onnxruntime: ONNX Runtime, no TensorFlow loaded (2-2.6x faster per window "
        "on AVX2 CPUs); tensorflow: Keras; auto: onnxruntime, tensorflow for bfloat16",
    )
    cli.setting_flag(
        parser,
        "--hop-seconds",
        key="tagging.hop_seconds",
        metavar="S",
        help="seconds between windows (0 = no overlap)",
    )
    cli.setting_flag(parser, "--pad", key="tagging.pad_short", help="pad short files")
    cli.setting_flag(
        parser, "--batch-size", key="tagging.batch_size", metavar="N", help="windows per call"
    )
    cli.setting_flag(
        parser,
        "--precision",
        key="model.precision",
        help="bfloat16: ~1.5x faster on CPUs with AVX512_BF16/AMX, tags within ~0.01",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _print_text(result: FileTags, top_k: int, out: TextIO) -> None:
    tags = ", ".join(f"{tag} {p:.3f}" for tag, p in result.top(top_k))
    out.write(f"{result.path}\t{result.duration_s:.1f}s\t{tags}\n")


def _top_json(result: FileTags, top_k: int | None) -> FileTagsJSON:
    """``--json``'s object; with ``--top K`` only the K most probable tags (file and windows)."""
    data = result.to_json_dict()
    if top_k is not None:

        def top(tags: dict[str, float]) -> dict[str, float]:
            return dict(sorted(tags.items(), key=lambda item: -item[1])[:top_k])

        data["tags"] = top(data["tags"])
        for window in data["windows"]:
            window["tags"] = top(window["tags"])
    return data


def run(ctx: cli.Context) -> ExitStatus:
    """Tag every file on the command line; the body :func:`main` hands to :func:`cli.run`."""
    args = ctx.args
    cfg = ctx.load_config({"tagging.top_k": args.top})
    if cfg.logging.level == "INFO":  # stdout is the result: say only what went wrong
        cli.setup_logging(logging.WARNING)

    from model.tagger import load_tagger  # TensorFlow (if used): after the settings are checked

    tagger = load_tagger(
        cfg.model.name,
        cache_dir=cfg.model.cache_dir,
        device=cfg.model.device,
        precision=cfg.model.precision,
        backend=cfg.model.backend,
    )  # a model that does not load: UnavailableError, exit status 3
    hop_frames_for(cfg.tagging.hop_seconds, tagger.contract)  # a bad hop: exit status 2

    from tqdm import tqdm

    from archive.inputs import expand_paths

    # Folders become their audio files; other paths go on as given (a missing one
    # fails alone, a repeated one is tagged again, like before).
    files = list(
        expand_paths(
            args.files,
            stdin=sys.stdin if "-" in args.files else None,
            manifests=False,
            patterns=False,
            strict=False,
            unique=False,
        )
    )
    status = ExitStatus.OK
    out, err = ctx.stdout, ctx.stderr
    progress = tqdm(
        total=len(files),
        unit="file",
        file=err,
        disable=args.no_progress or len(files) < 2 or None,
        leave=False,
    )
    try:
        results = tag_files(
            files,
            tagger,
            hop_seconds=cfg.tagging.hop_seconds,
            pad=cfg.tagging.pad_short,
            batch_size=cfg.tagging.batch_size,
        )
        for path, result in results:
            progress.update()
            if not isinstance(result, FileTags):
                if args.traceback:
                    traceback.print_exception(result, file=err)
                progress.write(f"error: {result}", file=err)
                status = ExitStatus.ERROR
                continue
            if result.padded:
                progress.write(
                    f"warning: {path}: shorter than one window, padded with silence", file=err
                )
            if args.json:
                out.write(json.dumps(_top_json(result, args.top), allow_nan=False) + "\n")
            else:
                _print_text(result, cfg.tagging.top_k, out)
            out.flush()
    finally:
        progress.close()
    return status


main = cli.command(build_parser, run)

if __name__ == "__main__":
    cli.exit_now(main())  # TensorFlow's interpreter teardown would add ~2 s to Ctrl-C
