"""Training checkpoints: a checkpoint IS a model folder, plus its training state.

A run folder ``<out>`` holds ``checkpoints/last/`` (written every epoch) and
``checkpoints/best/`` (the best validation macro ROC-AUC so far), each a model
folder (:mod:`model.folder`) that :func:`model.load_tagger` loads as it is::

    model.keras     the network, with its optimizer state (``--resume`` continues exactly)
    contract.json   its model contract: tags, feature settings, window, architecture;
                    ``extra`` says the epoch, the score and the teacher or initial weights
    state.json      the training state: the TrainConfig, epoch, best score,
                    early-stopping and learning-rate bookkeeping, the epoch's logs

Both are written by the one atomic writer (:func:`model.folder.save_model_folder`),
so a run killed mid-write keeps its previous checkpoint.  Export copies the
contract (:mod:`training.export`); nothing rebuilds it from loose fields.

Nothing here imports TensorFlow until a network is saved or loaded, so the
checks of :func:`check_run_folder` cost the user no start-up time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.schema import ConfigError
from model.contract import ModelContract
from model.convert import PRETRAINED
from model.folder import (
    CONTRACT_FILE,
    MODEL_FILE,
    ModelLoadError,
    load_network,
    save_model_folder,
)

if TYPE_CHECKING:
    import keras

    from training.config import TrainConfig

__all__ = [
    "STATE_FILE",
    "check_run_folder",
    "find_checkpoint",
    "load_checkpoint",
    "model_to_load",
    "read_state",
    "save_checkpoint",
]

STATE_FILE = "state.json"
CHECKPOINTS = "checkpoints"


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder from itself, its ``model.keras``, or a run folder (-> best).

    Raises
    ------
    ModelLoadError
        ``path`` is none of these (exit status 3).
    """
    folder = Path(path).expanduser()
    if folder.is_file() and folder.name == MODEL_FILE:
        folder = folder.parent
    for candidate in (folder, folder / CHECKPOINTS / "best", folder / CHECKPOINTS / "last"):
        if (candidate / STATE_FILE).is_file() and (candidate / MODEL_FILE).is_file():
            if not (candidate / CONTRACT_FILE).is_file():
                raise ModelLoadError(
                    f"{candidate}: a checkpoint without {CONTRACT_FILE} (written before "
                    "checkpoints were model folders); train it again"
                )
            return candidate
    raise ModelLoadError(
        f"{path}: not a checkpoint (expected {MODEL_FILE}, {CONTRACT_FILE} and "
        f"{STATE_FILE}, or a run folder)"
    )


def model_to_load(path: str | os.PathLike[str]) -> str:
    """What to hand :func:`model.load_tagger` for ``path``, checked without loading anything.

    A pretrained name as it is; the model folder of an exported model or a
    checkpoint (or of its ``model.keras``); a run folder's best checkpoint.

    Raises
    ------
    ModelLoadError
        ``path`` is none of these (exit status 3).
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        if str(path) in PRETRAINED:
            return str(path)
        raise ModelLoadError(
            f"model {str(path)!r} is neither a pretrained name ({', '.join(PRETRAINED)}) "
            "nor a model folder, checkpoint or run folder"
        )
    if folder.is_file() and folder.name == MODEL_FILE:
        folder = folder.parent
    if (folder / CONTRACT_FILE).is_file():
        return str(folder)
    return str(find_checkpoint(folder))


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training state (``state.json``) of a checkpoint (see :func:`find_checkpoint`)."""
    state_path = find_checkpoint(path) / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{state_path}: cannot read the training state ({exc})") from None
    if not isinstance(state, dict):
        raise ModelLoadError(f"{state_path}: not a training state (expected a JSON object)")
    return state


def save_checkpoint(
    folder: Path, network: keras.Model, contract: ModelContract, state: dict[str, Any]
) -> None:
    """Write the model folder ``folder`` with ``state.json``, replacing it atomically."""
    save_model_folder(
        folder, network, contract, files={STATE_FILE: json.dumps(state, indent=2) + "\n"}
    )


def load_checkpoint(
    path: str | os.PathLike[str], *, compile: bool = False
) -> tuple[keras.Model, ModelContract, dict[str, Any]]:
    """The network, contract and training state of a checkpoint (see :func:`find_checkpoint`).

    ``compile=True`` restores the optimizer too (for ``--resume``).
    """
    folder = find_checkpoint(path)
    state = read_state(folder)
    contract = ModelContract.load(folder)
    return load_network(folder, compile=compile), contract, state


def check_run_folder(config: TrainConfig, out_dir: str | os.PathLike[str], *, resume: bool) -> None:
    """Refuse, before anything is loaded, a run that would overwrite or contradict ``out_dir``.

    Raises
    ------
    ConfigError
        ``out_dir`` holds a run but ``resume`` is off; ``resume`` is on but it
        holds none; or the config changes a ``[data]`` or ``[model]`` setting
        of the run it resumes (only ``[train]`` settings may change).
    """
    from training.config import TrainConfig

    out = Path(out_dir)
    last = out / CHECKPOINTS / "last"
    if not resume:
        if last.is_dir():
            raise ConfigError(
                f"--out {out}: already holds a run; "
                "pass --resume to continue it or choose another --out"
            )
        return
    if not last.is_dir():
        raise ConfigError(f"--out {out}: holds no run to resume; leave out --resume to start one")
    old, new = TrainConfig.from_dict(read_state(last)["config"]).to_dict(), config.to_dict()
    for section in ("data", "model"):
        for key, value in new[section].items():
            if old[section].get(key) != value:
                raise ConfigError(
                    f"{section}.{key}: the checkpoint was trained with {old[section].get(key)!r}, "
                    f"the config says {value!r}; use another --out or restore the setting"
                )
