"""``python -m training``: train, evaluate and export tagging models.

Commands::

    python -m training train --config PATH [--out DIR] [--resume]
    python -m training evaluate --model PATH (--config PATH | --manifest CSV) [--out DIR]
    python -m training export --checkpoint PATH --out DIR [--name NAME] [--no-onnx] [--tflite]

``--config`` here is the training config (``training/configs/*.toml``), not
the runtime settings file.  Exit statuses are those of every tagstream command
(:class:`tagstream.errors.ExitStatus`): 0 ok, 1 unexpected error, 2 bad command
line or training config, 3 data or model cannot be had (missing or malformed
files, a model that does not load), 130 stopped by Ctrl-C.  Every setting is
checked before TensorFlow loads, so a bad one fails in well under a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from config import LoggingConfig, choices
from tagstream import cli
from training.config import load_train_config
from training.datasets import SPLITS

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m training", "Train, evaluate and export tagging models.", config=False
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=choices(LoggingConfig, "level"),
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
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    evaluate.add_argument("--cache-dir", help="feature cache for --manifest")
    evaluate.add_argument("--out", type=Path, help="folder for evaluation.json and .png")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")

    export = commands.add_parser("export", help="write a model folder that load_tagger loads")
    export.add_argument("--checkpoint", required=True, type=Path, help="checkpoint or run folder")
    export.add_argument("--out", required=True, type=Path, help="model folder to write")
    export.add_argument("--name", help="model name in contract.json (default: the run's name)")
    export.add_argument(
        "--no-onnx", action="store_true", help="skip model.onnx (the ONNX Runtime backend's file)"
    )
    export.add_argument(
        "--tflite", action="store_true", help="also write model.tflite (deprecated: use ONNX)"
    )
    return parser


def run(ctx: cli.Context) -> int:
    """Check everything that can be checked, then import TensorFlow and do the work."""
    args = ctx.args
    cli.setup_logging(args.log_level)
    if args.command == "train":
        from training.checkpoint import check_run_folder
        from training.datasets import load_dataset

        config = load_train_config(args.config, overrides={"train.epochs": args.epochs})
        out = args.out or Path("runs") / args.config.stem
        check_run_folder(config, out, resume=args.resume)
        dataset = load_dataset(config)
        from training.train import train  # TensorFlow loads here

        result = train(
            config,
            out,
            resume=args.resume,
            dataset=dataset,
            verbose=0 if args.quiet else 1,
            progress=not args.quiet,
        )
        ctx.stdout.write(
            f"trained epochs={result.epochs_done} best_val_roc_auc_macro={result.best} "
            f"checkpoint={result.best_checkpoint}\n"
        )
        return cli.ExitStatus.OK
    if args.command == "evaluate":
        from training.checkpoint import model_to_load

        split_of = load_train_config(args.config) if args.config else None
        model_to_load(args.model)
        from training.evaluate import evaluate, format_table

        evaluated = evaluate(
            args.model,
            config=split_of,
            manifest=args.manifest,
            split=args.split,
            cache_dir=args.cache_dir,
            out_dir=args.out,
            progress=not args.quiet,
        )
        ctx.stdout.write(format_table(evaluated) + "\n")
        if args.out:
            ctx.stdout.write(
                f"wrote {args.out / 'evaluation.json'} and {args.out / 'evaluation.png'}\n"
            )
        return cli.ExitStatus.OK
    from training.checkpoint import find_checkpoint

    checkpoint = find_checkpoint(args.checkpoint)
    from training.export import export_checkpoint

    folder = export_checkpoint(
        checkpoint, args.out, name=args.name, tflite=args.tflite, onnx=not args.no_onnx
    )
    ctx.stdout.write(f"exported {folder} (load it with --model {folder})\n")
    return cli.ExitStatus.OK


main = cli.command(build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
