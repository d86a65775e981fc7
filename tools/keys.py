"""Create CURVE key pairs for ``[security]`` in config.toml.

    python -m tools.keys generate --out DIR [--name NAME] [--force]

Writes ``DIR/NAME.key`` (public: give it to the other side) and
``DIR/NAME.key_secret`` (secret: keep it, mode 0600) with
``zmq.auth.create_certificates``.  A typical set-up::

    python -m tools.keys generate --out keys --name worker      # the worker's pair
    python -m tools.keys generate --out keys --name studio-a    # one pair per client
    mkdir -p keys/allowed && cp keys/studio-a.key keys/allowed/

then, on the worker, ``server_secret_key = "keys/worker.key_secret"`` and
``allowed_clients_dir = "keys/allowed"``; on each client
``client_secret_key = "keys/studio-a.key_secret"`` and
``server_public_key = "keys/worker.key"``.

Exit status (:class:`tagstream.errors.ExitStatus`): 0 written, 1 unexpected
error, 2 usage error (including a pair that exists already, unless
``--force``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import zmq.auth

from tagstream import cli
from tagstream.errors import UsageError

__all__ = ["KeysError", "build_parser", "generate", "main"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeysError(UsageError, ValueError):
    """A bad key name, or a pair that exists already; the message is one line."""


def generate(
    out: str | os.PathLike[str], *, name: str = "tagstream", force: bool = False
) -> tuple[Path, Path]:
    """Create one key pair in ``out``; return ``(public_path, secret_path)``.

    Parameters
    ----------
    out : path-like
        Folder, created if missing.
    name : str
        File stem: letters, digits, ``.``, ``_`` and ``-``.
    force : bool
        Overwrite an existing pair of that name.

    Raises
    ------
    KeysError
        A bad name, or the pair exists and ``force`` is false.
    """
    if not _NAME.match(name):
        raise KeysError(f"--name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    folder = Path(out)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise KeysError(f"{public} exists already; pick another --name or pass --force")
    folder.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(folder, name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(
        "python -m tools.keys",
        "Create ZeroMQ CURVE key pairs for config.toml [security].",
        config=False,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="create one key pair")
    gen.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    gen.add_argument("--name", default="tagstream", help="file stem (default: tagstream)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing pair")
    return parser


def run(ctx: cli.Context) -> int:
    """Write the pair ``--out/--name``; print where each half goes."""
    public, secret = generate(ctx.args.out, name=ctx.args.name, force=ctx.args.force)
    out = ctx.stdout
    print(f"public key: {public}  (share: allowed_clients_dir or server_public_key)", file=out)
    print(f"secret key: {secret}  (keep private: server_secret_key or client_secret_key)", file=out)
    return cli.ExitStatus.OK


main = cli.command(build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
