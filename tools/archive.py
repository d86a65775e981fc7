"""Tag an archive into a Parquet dataset, resumably, on this machine or a Ray cluster.

    python -m tools.archive PATH... --out DIR [--engine local|ray] [--address ADDRESS]
                            [--windows] [--extensions wav,flac,...] [--retry-errors]
                            [--model NAME|PATH] [--backend onnxruntime] [--hop-seconds S]

``PATH`` is a file, a folder (recursive, filtered by ``--extensions``), a glob
pattern (quote it: ``'music/**/*.mp3'``), a manifest (``.txt``: a path per
line; ``.csv``: its ``path`` column) or ``-`` (paths on stdin).  ``DIR`` gets
``tags/`` (one row per file: path, size, mtime, duration, model, the tag
probabilities as columns), ``errors/`` (one row per file that failed, with the
reason), with ``--windows`` also ``windows/`` (one row per window), as Parquet
parts written every ``--part-files`` files or ``--part-seconds`` seconds.

**Resume**: rerun the same command.  Files already in ``DIR`` (same path, size
and modification time) are skipped and no file ever gets two rows, also after
``kill -9``: at most the part in flight is lost.  A failing file never stops
the run.  The progress bar shows files/s, audio-hours/s and the ETA; a summary
line ends the run on stdout.

``--engine local`` (default) uses every core of this machine without Ray;
``--engine ray`` runs on Ray Data (``pip install 'tagstream[ray]'``): a new
local Ray, or the cluster at ``--address``.  See docs/SCALE.md.

The library behind it is :mod:`archive`.

Exit status (:class:`tagstream.errors.ExitStatus`): 0 every file tagged (or
already in ``DIR``), 1 some file failed (see ``DIR/errors``), 2 usage or config
error (also: ``DIR`` holds other settings or another run writes it), 3 the
model or Ray could not be had, 130 interrupted (what was tagged is kept).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from archive.engine import Engine, run_archive
from archive.inputs import expand_inputs, parse_extensions
from archive.store import ArchiveSettings, ArchiveStore
from model.audio import AUDIO_EXTENSIONS
from tagstream import cli
from tagstream.errors import ExitStatus

if TYPE_CHECKING:
    from config import Config
    from model.contract import ModelContract

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.archive",
        "Tag an archive of audio files into a Parquet dataset; rerun to resume.",
        epilog="Exit status: 0 all tagged, 1 some file failed, 2 usage or config error, "
        "3 model or Ray not available, 130 interrupted.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="PATH",
        help="files, folders, glob patterns, .txt/.csv manifests, or - for paths on stdin",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="the Parquet dataset's folder")
    parser.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="default: local (no Ray)"
    )
    parser.add_argument(
        "--address", metavar="ADDRESS", help="Ray cluster (auto, HOST:6379, ray://HOST:10001)"
    )
    parser.add_argument("--actors", type=int, metavar="N", help="Ray: tagging actors")
    parser.add_argument(
        "--cpus-per-actor", type=float, default=1.0, metavar="C", help="Ray: CPUs per actor"
    )
    parser.add_argument(
        "--gpus-per-actor", type=float, metavar="G", help="Ray: GPUs per actor (default 1 if any)"
    )
    parser.add_argument(
        "--files-per-batch", type=int, default=16, metavar="N", help="Ray: files per actor call"
    )
    parser.add_argument(
        "--extensions",
        type=parse_extensions,
        default=AUDIO_EXTENSIONS,
        metavar="EXT,...",
        help=f"kept from folders and patterns (default {','.join(AUDIO_EXTENSIONS)})",
    )
    parser.add_argument("--windows", action="store_true", help="also write one row per window")
    parser.add_argument("--retry-errors", action="store_true", help="tag failed files again")
    parser.add_argument(
        "--part-files", type=int, default=1000, metavar="N", help="files per Parquet part"
    )
    parser.add_argument(
        "--part-seconds", type=float, default=60.0, metavar="S", help="seconds per Parquet part"
    )
    cli.setting_flag(parser, "--model", key="model.name", metavar="NAME|PATH", help="the model")
    cli.setting_flag(parser, "--backend", key="model.backend", help="tensorflow or onnxruntime")
    cli.setting_flag(parser, "--precision", key="model.precision", help="TensorFlow precision")
    cli.setting_flag(
        parser, "--hop-seconds", key="tagging.hop_seconds", metavar="S", help="0 = no overlap"
    )
    cli.setting_flag(parser, "--batch-size", key="tagging.batch_size", metavar="N", help="windows")
    cli.setting_flag(parser, "--pad", key="tagging.pad_short", help="pad files shorter than 3 s")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _engine(args: argparse.Namespace, cfg: Config, contract: ModelContract, model: str) -> Engine:
    """The engine the command line asks for, with its model loaded (local) or reachable (Ray)."""
    if args.engine == "ray":
        from archive.ray_engine import RayEngine

        return RayEngine(
            contract,
            model=model,
            cache_dir=cfg.model.cache_dir,
            device=cfg.model.device,
            precision=cfg.model.precision,
            backend=cfg.model.backend,
            hop_seconds=cfg.tagging.hop_seconds,
            pad=cfg.tagging.pad_short,
            batch_size=cfg.tagging.batch_size,
            address=args.address,
            actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor,
            files_per_batch=args.files_per_batch,
        )
    from archive.local import LocalEngine
    from model.tagger import load_tagger

    tagger = load_tagger(
        cfg.model.name,
        cache_dir=cfg.model.cache_dir,
        device=cfg.model.device,
        precision=cfg.model.precision,
        backend=cfg.model.backend,
    )  # a model that does not load: UnavailableError, exit status 3
    return LocalEngine(
        tagger,
        hop_seconds=cfg.tagging.hop_seconds,
        pad=cfg.tagging.pad_short,
        batch_size=cfg.tagging.batch_size,
    )


def run(ctx: cli.Context) -> ExitStatus:
    """List the inputs, open the output, tag what is missing; the body of :func:`main`."""
    args = ctx.args
    cfg = ctx.load_config()
    if args.address and args.engine != "ray":
        raise cli.usage("--address needs --engine ray")
    if args.engine == "ray":
        from archive.ray_engine import import_ray

        import_ray()  # not installed: exit status 3 before anything else
    stdin = sys.stdin if "-" in args.inputs else None
    files = list(expand_inputs(args.inputs, extensions=args.extensions, stdin=stdin))
    logging.getLogger(__name__).info("inputs=%d files", len(files))

    from model.contract import ModelContract
    from model.convert import PRETRAINED
    from model.tagger import resolve_model_folder
    from model.tagging import hop_frames_for

    # A model that cannot be had: exit status 3; a bad hop: exit status 2.
    folder = resolve_model_folder(cfg.model.name, cache_dir=cfg.model.cache_dir)
    contract = ModelContract.load(folder)
    hop_frames_for(cfg.tagging.hop_seconds, contract)
    # Ray's actors load the model where they run: a pretrained name from each node's
    # cache, a folder by its absolute path (their working folder is not ours).
    model = cfg.model.name if cfg.model.name in PRETRAINED else str(folder.resolve())
    engine = _engine(args, cfg, contract, model)
    try:
        settings = ArchiveSettings(
            model=contract.name,
            tags=tuple(contract.tags),
            hop_seconds=cfg.tagging.hop_seconds,
            pad=cfg.tagging.pad_short,
            windows=args.windows,
        )
        with (
            ArchiveStore(
                args.out,
                settings,
                part_files=args.part_files,
                part_seconds=args.part_seconds,
                retry_errors=args.retry_errors,
            ) as store,
            ctx.on_stop(ctx.stop.set),
        ):
            summary = run_archive(
                files,
                store,
                engine,
                stop=ctx.stop,
                progress=ctx.stderr,
                show_progress=not args.no_progress,
            )
    finally:
        engine.close()
    ctx.stdout.write(summary.line(args.out) + "\n")
    ctx.stdout.flush()
    if summary.interrupted and ctx.stop.is_set():
        return ExitStatus.INTERRUPTED
    return ExitStatus.ERROR if summary.failed else ExitStatus.OK


main = cli.command(build_parser, run)

if __name__ == "__main__":
    cli.exit_now(main())  # TensorFlow's interpreter teardown would add ~2 s to Ctrl-C
