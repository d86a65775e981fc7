"""Training, evaluation and export of tagging models (``python -m training``).

Library entry points: :func:`training.config.load_train_config` (the training
settings schema), :func:`training.train.train`, :func:`training.evaluate.evaluate`,
:func:`training.export.export_checkpoint`; checkpoints (model folders plus their
training state) in :mod:`training.checkpoint`; datasets in
:mod:`training.datasets`, the feature cache and tf.data pipeline in
:mod:`training.pipeline`.  Networks come from the one registry,
:data:`model.architectures.ARCHITECTURES`; :mod:`training.architectures` adds
fine-tuning from pretrained weights.  Modules import TensorFlow lazily where
they can, so ``import training`` is cheap.
"""
