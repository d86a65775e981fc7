"""The Ray engine: Ray Data reads and decodes in CPU tasks and tags in a pool of actors.

::

    from_items(files) -> map_batches(decode_batch)        CPU tasks, 1 CPU each
                      -> map_batches(TagActor, concurrency=N, num_cpus=C, num_gpus=G)
                      -> the driver: ArchiveStore writes the Parquet parts

- **Decoding** (:func:`decode_batch`) is a stateless task: each file through the
  one audio path into its log-mel windows (:func:`model.tagging.decode_file`),
  which needs the model's contract only, never the model.
- **Tagging** (:class:`TagActor`) runs in a fixed pool of actors, each loading
  the model once (:func:`model.tagger.load_tagger`, either backend) and batching
  windows across files (:func:`model.tagging.tag_decoded`).  An actor that dies
  is restarted and its batch retried (Ray Data's defaults for actor pools,
  ``max_restarts=-1``, ``max_task_retries=-1``): the run completes, and the
  driver keeps one result per file whatever came twice.
- **Streaming**: Ray Data runs the stages side by side with back-pressure, so
  decoded windows never pile up beyond a few batches per actor.
- **Writing** is the driver's: results are small (a file's row is ~300 bytes)
  and the driver's :class:`archive.store.ArchiveStore` is what makes a resumed
  run exactly-once (atomic parts, one key per file), the same store as the
  local engine's.

The same code runs on a laptop (``address=None`` starts a local Ray) and on a
cluster (``address="ray://head:10001"`` or ``"auto"`` on a node of it); every
node needs tagstream installed (``pip install 'tagstream[ray]'``) and the model
reachable (see docs/SCALE.md).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import resource
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from archive.engine import Result
from archive.inputs import InputFile
from archive.store import FileFailure
from tagstream.errors import TagstreamError, UnavailableError, UsageError

if TYPE_CHECKING:
    from model.contract import ModelContract

__all__ = ["RayEngine", "TagActor", "decode_batch", "import_ray"]

logger = logging.getLogger(__name__)

#: Files per decoding task: small enough to spread an archive over many tasks.
FILES_PER_TASK: Final = 8
#: Memory a decoding task reserves (its files' windows: ~24 kB per second of audio).
#: Asking for it also keeps Ray Data from fusing decoding into the tagging actors
#: (it fuses stages whose resource requests are equal): decoding stays on CPU tasks,
#: which scale apart from the actors and keep the actors' cores for the model.
DECODE_TASK_MEMORY: Final = 256 * 2**20


def import_ray() -> Any:
    """``ray`` and ``ray.data``, or an error saying how to install them.

    Raises
    ------
    tagstream.errors.UnavailableError
        Ray is not installed (exit status 3).
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise UnavailableError(
            "--engine ray needs Ray Data: pip install 'tagstream[ray]' "
            "(or scripts/install.sh --dev), or use --engine local"
        ) from None
    return ray


def _pack(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    contract: dict[str, Any],
    hop_seconds: float,
    pad: bool,
) -> dict[str, np.ndarray]:
    """Ray task: decode each file of ``batch`` into its windows (or why it cannot be).

    ``payload`` holds a pickled :class:`model.tagging.DecodedFile` or
    :class:`archive.store.FileFailure` per file.
    """
    from model.contract import ModelContract
    from model.tagging import decode_file

    spec = ModelContract.from_dict(contract)
    payloads = []
    for path in batch["path"]:
        item: object
        try:
            item = decode_file(str(path), spec, hop_seconds=hop_seconds, pad=pad)
        except TagstreamError as exc:
            item = FileFailure.of(exc)
        payloads.append(_pack(item))
    return {
        "path": batch["path"],
        "size": batch["size"],
        "mtime_ns": batch["mtime_ns"],
        "payload": np.array(payloads, dtype=object),
    }


class TagActor:
    """Ray actor: one loaded tagger; tags batches of decoded files.

    Parameters
    ----------
    model, cache_dir, device, precision, backend
        As :func:`model.tagger.load_tagger`.
    batch_size : int > 0
        Windows per model call.
    threads : int > 0
        The CPUs Ray gave the actor: TensorFlow's intra-op threads
        (``TF_NUM_INTRAOP_THREADS``, unless set already).
    """

    def __init__(
        self,
        *,
        model: str,
        cache_dir: str,
        device: str,
        precision: str,
        backend: str,
        batch_size: int,
        threads: int,
    ) -> None:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from model.tagger import load_tagger

        self.tagger = load_tagger(
            model, cache_dir=cache_dir, device=device, precision=precision, backend=backend
        )
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from model.tagging import DecodedFile, tag_decoded

        items = [pickle.loads(p) for p in batch["payload"]]
        decoded = [item for item in items if isinstance(item, DecodedFile)]
        tagged = iter(tag_decoded(decoded, self.tagger, batch_size=self.batch_size))
        payloads = []
        for item in items:
            if isinstance(item, DecodedFile):
                result = next(tagged)
                item = result if not isinstance(result, Exception) else FileFailure.of(result)
            payloads.append(_pack(item))
        n = len(payloads)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        return {
            "path": batch["path"],
            "size": batch["size"],
            "mtime_ns": batch["mtime_ns"],
            "payload": np.array(payloads, dtype=object),
            "actor_pid": np.full(n, os.getpid(), dtype=np.int64),
            "actor_peak_rss": np.full(n, peak_rss, dtype=np.int64),
        }


class RayEngine:
    """Tag files on a Ray cluster with Ray Data.

    Parameters
    ----------
    contract : ModelContract
        The model's (decoding needs it; the actors load the model itself).
    model, cache_dir, device, precision, backend
        How each actor loads the model (:func:`model.tagger.load_tagger`); a
        name's cache folder must exist or be creatable on every node.
    hop_seconds, pad, batch_size
        As :func:`model.tagging.tag_files`.
    address : str or None
        A running cluster (``"auto"``, ``"ray://HOST:10001"``, ``"HOST:6379"``);
        ``None`` joins the Ray this process already started, else starts a local one.
    actors : int > 0 or None
        Tagging actors; ``None``: the cluster's GPUs when ``gpus_per_actor`` > 0, else
        half its CPUs over ``cpus_per_actor`` (the other half decode), at least 1.
    cpus_per_actor : float > 0
    gpus_per_actor : float >= 0 or None
        ``None``: 1 when the cluster has GPUs, else 0.
    files_per_batch : int > 0
        Files per actor call (their windows are batched together).
    """

    name = "ray"

    def __init__(
        self,
        contract: ModelContract,
        *,
        model: str,
        cache_dir: str,
        device: str = "auto",
        precision: str = "float32",
        backend: str = "tensorflow",
        hop_seconds: float = 0.0,
        pad: bool = False,
        batch_size: int = 32,
        address: str | None = None,
        actors: int | None = None,
        cpus_per_actor: float = 1.0,
        gpus_per_actor: float | None = None,
        files_per_batch: int = 16,
    ) -> None:
        if actors is not None and actors <= 0:
            raise UsageError(f"actors={actors} must be > 0")
        if not cpus_per_actor > 0:
            raise UsageError(f"cpus_per_actor={cpus_per_actor} must be > 0")
        if gpus_per_actor is not None and gpus_per_actor < 0:
            raise UsageError(f"gpus_per_actor={gpus_per_actor} must be >= 0")
        if files_per_batch <= 0:
            raise UsageError(f"files_per_batch={files_per_batch} must be > 0")
        self.ray = import_ray()
        self.contract = contract
        from model.tagger import resolve_backend

        self.backend = resolve_backend(backend, precision=precision)  # rows name "auto"'s choice
        self.actor_options = {
            "model": model,
            "cache_dir": cache_dir,  # "~" is each node's own home
            "device": device,
            "precision": precision,
            "backend": backend,
            "batch_size": batch_size,
            "threads": max(1, math.floor(cpus_per_actor)),
        }
        self.hop_seconds = hop_seconds
        self.pad = pad
        self.files_per_batch = files_per_batch
        self.cpus_per_actor = cpus_per_actor
        self._started_ray = False
        self._connect(address)
        resources = self.ray.cluster_resources()
        cluster_gpus = float(resources.get("GPU", 0))
        cluster_cpus = float(resources.get("CPU", 1))
        self.gpus_per_actor = (
            (1.0 if cluster_gpus else 0.0) if gpus_per_actor is None else gpus_per_actor
        )
        if actors is None:
            if self.gpus_per_actor > 0:
                actors = max(1, int(cluster_gpus // self.gpus_per_actor))
            else:
                actors = max(1, int(cluster_cpus // 2 // cpus_per_actor))
        self.actors = actors
        #: Peak resident memory (bytes) of each actor process seen, by pid.
        self.actor_peak_rss: dict[int, int] = {}
        logger.info(
            "ray cluster cpus=%g gpus=%g actors=%d cpus_per_actor=%g gpus_per_actor=%g",
            cluster_cpus,
            cluster_gpus,
            actors,
            cpus_per_actor,
            self.gpus_per_actor,
        )

    def _connect(self, address: str | None) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        quiet = logger.getEffectiveLevel() > logging.DEBUG
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=not quiet,
                logging_level=logging.WARNING if quiet else logging.INFO,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a new local cluster"
            raise UnavailableError(
                f"cannot reach Ray at {where} ({exc}); start it with `ray start --head` "
                "and pass its address with --address"
            ) from None
        self._started_ray = True
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the command's own bar counts files and audio
        context.print_on_execution_start = False
        if quiet:
            logging.getLogger("ray.data").setLevel(logging.WARNING)

    def results(self, files: Sequence[InputFile], stop: threading.Event) -> Iterator[Result]:
        ray = self.ray
        items = [{"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns} for f in files]
        by_path = {f.path: f for f in files}
        ds = ray.data.from_items(
            items, override_num_blocks=max(1, -(-len(items) // FILES_PER_TASK))
        )
        ds = ds.map_batches(
            decode_batch,
            batch_size=None,  # one task per block of FILES_PER_TASK files
            batch_format="numpy",
            fn_kwargs={
                "contract": self.contract.to_dict(),
                "hop_seconds": self.hop_seconds,
                "pad": self.pad,
            },
            num_cpus=1,
            memory=DECODE_TASK_MEMORY,
        )
        ds = ds.map_batches(
            TagActor,
            batch_size=self.files_per_batch,
            batch_format="numpy",
            fn_constructor_kwargs=self.actor_options,
            # Ray Data restarts a dead actor and retries its batch by default
            # (max_restarts=-1, max_task_retries=-1); tests/test_archive.py kills one.
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.cpus_per_actor,
            num_gpus=self.gpus_per_actor,
        )
        # No prefetching: it holds finished results back until more are ready, and the
        # driver's work per result is small (the progress bar and resume want them now).
        batches = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0)
        try:
            for batch in batches:
                for pid, rss in zip(batch["actor_pid"], batch["actor_peak_rss"], strict=True):
                    self.actor_peak_rss[int(pid)] = max(
                        self.actor_peak_rss.get(int(pid), 0), int(rss)
                    )
                for path, payload in zip(batch["path"], batch["payload"], strict=True):
                    yield by_path[str(path)], pickle.loads(payload)
                if stop.is_set():
                    return
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Leave the Ray cluster this engine joined or started; safe to call twice."""
        if self._started_ray:
            self._started_ray = False
            self.ray.shutdown()
