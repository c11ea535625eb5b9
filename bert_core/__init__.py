"""BERT pretraining and fine-tuning in TensorFlow 2 with Horovod.

The library behind the `bert` command and the Kubeflow pipeline's stages. It imports no kfp and no
kubernetes. Heavy modules (TensorFlow) are imported only by the stages that need them.
"""

__version__ = "0.1.0"
