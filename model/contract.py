"""The model contract: what a saved model needs to be fed and what it returns.

A model folder (:mod:`model.folder`) holds ``model.keras`` beside
``contract.json``; the worker sizes its window from the contract and
:func:`model.load_tagger` refuses a folder whose contract does not match its
network.  ``architecture`` always names a network of the one registry,
:data:`model.architectures.ARCHITECTURES`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.architectures import ARCHITECTURES
from model.features import MUSICNN_FEATURES, FeatureSpec
from model.folder import CONTRACT_FILE, MODEL_FILE
from tagstream.errors import UnavailableError

__all__ = ["CONTRACT_FILE", "MODEL_FILE", "MSD_TAGS", "ContractError", "ModelContract"]

FORMAT_VERSION = 1

#: The 50 Last.fm tags of the Million Song Dataset top-50 benchmark, in model output order.
MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
)  # fmt: skip


class ContractError(UnavailableError, ValueError):
    """A model folder's contract is missing, malformed or disagrees with its network."""


@dataclass(frozen=True)
class ModelContract:
    """Everything needed to feed a model and read its output.

    Attributes
    ----------
    name : str
        Shown to users and carried in every tag update.
    architecture : str
        Key of :data:`model.architectures.ARCHITECTURES`: the network's builder.
    tags : tuple of str
        Output order of the probabilities.
    features : FeatureSpec
        Sample rate, STFT and mel settings of the input.
    window_frames : int > 0
        Mel frames per window (187 = 3 s at 16 kHz, hop 256).
    preprocessing : str
        The log compression, for people reading the contract.
    source : str
        Where the weights came from.
    """

    name: str
    architecture: str
    tags: tuple[str, ...] = MSD_TAGS
    features: FeatureSpec = MUSICNN_FEATURES
    window_frames: int = 187
    preprocessing: str = "log10(1 + 10000 * mel_power), float32"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ContractError(
                f"model {self.name}: architecture={self.architecture!r} is not a registered "
                f"network ({', '.join(ARCHITECTURES)}); add its builder to "
                "model.architectures.ARCHITECTURES"
            )

    @property
    def window_seconds(self) -> float:
        return self.window_frames * self.features.hop_length / self.features.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "architecture": self.architecture,
            "tags": list(self.tags),
            "features": self.features.to_dict(),
            "window_frames": self.window_frames,
            "preprocessing": self.preprocessing,
            "source": self.source,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelContract:
        try:
            if data.get("format_version") != FORMAT_VERSION:
                raise ContractError(
                    f"contract format_version={data.get('format_version')!r}, "
                    f"this version reads {FORMAT_VERSION}"
                )
            features = FeatureSpec(**data["features"])
            return cls(
                name=str(data["name"]),
                architecture=str(data["architecture"]),
                tags=tuple(str(t) for t in data["tags"]),
                features=features,
                window_frames=int(data["window_frames"]),
                preprocessing=str(data.get("preprocessing", "")),
                source=str(data.get("source", "")),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ContractError):
                raise
            raise ContractError(f"malformed contract: {exc!r}") from None

    def save(self, folder: Path) -> None:
        """Write ``contract.json`` into ``folder``, as it is.

        To write a whole model folder atomically use
        :func:`model.folder.save_model_folder`, which calls this in its
        temporary folder.
        """
        (folder / CONTRACT_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ModelContract:
        path = folder / CONTRACT_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ContractError(f"{path}: no contract; is {folder} a model folder?") from None
        except json.JSONDecodeError as exc:
            raise ContractError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> ModelContract:
        return dataclasses.replace(self, **changes)
