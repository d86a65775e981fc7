"""``python -m training``: train, evaluate and export tagging models.

Commands::

    python -m training train --config PATH [--out DIR] [--resume]
    python -m training evaluate --model PATH (--config PATH | --manifest CSV) [--out DIR]
    python -m training export --checkpoint PATH --out DIR [--name NAME] [--no-tflite]

Exit codes (:class:`ExitCode`): 0 ok, 1 unexpected error, 2 usage or
config error, 3 data error (missing or malformed files), 4 model error,
130 interrupted.  Errors are one line on stderr; ``--traceback`` shows the
full trace.
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["ExitCode", "main", "parse_args"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow start-up chatter


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    DATA = 3
    MODEL = 4
    INTERRUPTED = 130


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    parser.add_argument("--traceback", action="store_true", help="show the full trace on errors")
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a training config")
    train.add_argument("--config", required=True, type=Path, help="training config (TOML)")
    train.add_argument("--out", type=Path, help="run folder (default: runs/<config name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("evaluate", help="song-level ROC-AUC / PR-AUC per tag")
    evaluate.add_argument("--model", required=True, help="model folder, checkpoint or run folder")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="evaluate on this config's test split")
    source.add_argument("--manifest", type=Path, help="evaluate on a path,tags CSV")
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"))
    evaluate.add_argument("--cache-dir", help="feature cache for --manifest")
    evaluate.add_argument("--out", type=Path, help="folder for evaluation.json and .png")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")

    export = commands.add_parser("export", help="write a model folder that load_tagger loads")
    export.add_argument("--checkpoint", required=True, type=Path, help="checkpoint or run folder")
    export.add_argument("--out", required=True, type=Path, help="model folder to write")
    export.add_argument("--name", help="model name in contract.json (default: the run's name)")
    export.add_argument("--no-tflite", action="store_true", help="skip model.tflite")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stdout: TextIO) -> ExitCode:
    from training.config import load_train_config

    if args.command == "train":
        from training.train import train

        config = load_train_config(args.config, overrides={"train.epochs": args.epochs})
        out = args.out or Path("runs") / args.config.stem
        result = train(
            config,
            out,
            resume=args.resume,
            verbose=0 if args.quiet else 1,
            progress=not args.quiet,
        )
        stdout.write(
            f"trained epochs={result.epochs_done} best_val_roc_auc_macro={result.best} "
            f"checkpoint={result.best_checkpoint}\n"
        )
        return ExitCode.OK
    if args.command == "evaluate":
        from training.evaluate import evaluate, format_table

        evaluated = evaluate(
            args.model,
            config=load_train_config(args.config) if args.config else None,
            manifest=args.manifest,
            split=args.split,
            cache_dir=args.cache_dir,
            out_dir=args.out,
            progress=not args.quiet,
        )
        stdout.write(format_table(evaluated) + "\n")
        if args.out:
            stdout.write(
                f"wrote {args.out / 'evaluation.json'} and {args.out / 'evaluation.png'}\n"
            )
        return ExitCode.OK
    from training.export import export_checkpoint

    folder = export_checkpoint(args.checkpoint, args.out, name=args.name, tflite=not args.no_tflite)
    stdout.write(f"exported {folder} (load it with --model {folder})\n")
    return ExitCode.OK


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run one command; return its :class:`ExitCode`."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    from config import ConfigError
    from model.contract import ContractError
    from model.tagger import ModelLoadError
    from training.datasets import DatasetError

    try:
        return int(run(args, stdout))
    except KeyboardInterrupt:
        stderr.write("interrupted\n")
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if args.traceback:
            raise
        code = ExitCode.ERROR
        if isinstance(exc, ConfigError):
            code = ExitCode.USAGE
        elif isinstance(exc, DatasetError):
            code = ExitCode.DATA
        elif isinstance(exc, ModelLoadError | ContractError):
            code = ExitCode.MODEL
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        stderr.write(f"error: {message}\n")
        return code


if __name__ == "__main__":
    sys.exit(main())
