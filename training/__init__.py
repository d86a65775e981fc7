"""Training, evaluation and export of tagging models (``python -m training``).

Library entry points: :func:`training.config.load_train_config`,
:func:`training.train.train`, :func:`training.evaluate.evaluate`,
:func:`training.export.export_checkpoint`; datasets in
:mod:`training.datasets`, the feature cache and tf.data pipeline in
:mod:`training.pipeline`, networks in :mod:`training.architectures`.
Modules import TensorFlow lazily where they can, so ``import training`` is cheap.
"""
