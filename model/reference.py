"""The original TensorFlow-1 graph of a pretrained model, run as shipped.

Used as ground truth by the fidelity test and as the baseline of the
benchmarks.  The ``.meta`` graph is imported after stripping every node's
``_output_shapes`` attribute (the import fails under TF 2.x otherwise); input
``model/Placeholder:0`` [N, 187, 96], training flag ``model/Placeholder_2:0``
fed False, output ``model/Sigmoid:0``.
"""

from __future__ import annotations

import numpy as np

from model.convert import checkpoint_dir

__all__ = ["OriginalGraph"]


class OriginalGraph:
    """A TF-1 session holding the original graph and weights of ``name``."""

    def __init__(self, name: str) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import meta_graph_pb2

        folder = checkpoint_dir(name)
        meta = meta_graph_pb2.MetaGraphDef()
        meta.ParseFromString((folder / ".meta").read_bytes())
        for node in meta.graph_def.node:
            if "_output_shapes" in node.attr:
                del node.attr["_output_shapes"]
        self._graph = tf.Graph()
        with self._graph.as_default():
            saver = tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
            self._session = tf.compat.v1.Session(graph=self._graph)
            saver.restore(self._session, str(folder) + "/")
        self._input = self._graph.get_tensor_by_name("model/Placeholder:0")
        self._training = self._graph.get_tensor_by_name("model/Placeholder_2:0")
        self._output = self._graph.get_tensor_by_name("model/Sigmoid:0")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, 50) for log-mel windows (N, 187, 96)."""
        return self._session.run(
            self._output, {self._input: batch.astype(np.float32), self._training: False}
        )

    def close(self) -> None:
        self._session.close()
