"""Bayesian Keras 3 layers: the Keras twin's arguments plus `prior=`, `bias_prior=`, `posterior=`, `seed=`."""

from tfbdl.layers.base import BayesianLayer
from tfbdl.layers.conv import (
    Conv1DFlipout,
    Conv1DReparameterization,
    Conv2DFlipout,
    Conv2DReparameterization,
    Conv3DFlipout,
    Conv3DReparameterization,
)
from tfbdl.layers.dense import DenseFlipout, DenseLocalReparameterization, DenseReparameterization
from tfbdl.layers.grouped import (
    GroupedDenseFlipout,
    GroupedDenseLocalReparameterization,
    GroupedDenseReparameterization,
    GroupedHierarchical,
)

__all__ = [
    "BayesianLayer",
    "DenseReparameterization",
    "DenseFlipout",
    "DenseLocalReparameterization",
    "Conv1DReparameterization",
    "Conv2DReparameterization",
    "Conv3DReparameterization",
    "Conv1DFlipout",
    "Conv2DFlipout",
    "Conv3DFlipout",
    "GroupedDenseFlipout",
    "GroupedDenseReparameterization",
    "GroupedDenseLocalReparameterization",
    "GroupedHierarchical",
]
