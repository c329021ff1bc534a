"""Downstream check: train a multi-label classifier on a build, test it on human labels, compare arms.

`config` (the run's settings), `data` (images and pre-training checks), `model` (tiny CNN, timm,
asymmetric loss), `loop` (training, checkpoints, train.json), `compare` (mAP ratio, gap closed).
Needs the `train` extra (torch; timm for timm backbones).
"""

from builder.analysis.samples import output_samples, split_samples
from builder.analysis.train.compare import compare_training
from builder.analysis.train.config import TINY, TrainConfig
from builder.analysis.train.loop import seed_everything, train
from builder.analysis.train.model import AsymmetricLoss, TinyCNN, build_model

__all__ = ["TINY", "AsymmetricLoss", "TinyCNN", "TrainConfig", "build_model", "compare_training",
           "output_samples", "seed_everything", "split_samples", "train"]
