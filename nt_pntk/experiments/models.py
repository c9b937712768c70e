"""The model zoo: stax networks in NTK parameterization (``fc``, ``cnn``, ``wide_resnet``, ``resnet``)."""

from nt_pntk._src.experiments.models import (
    B_STD,
    MODELS,
    RESNET_STAGES,
    W_STD,
    Model,
    cnn,
    fc,
    get_model,
    resnet,
    wide_resnet,
)

__all__ = [
    "B_STD",
    "MODELS",
    "RESNET_STAGES",
    "W_STD",
    "Model",
    "cnn",
    "fc",
    "get_model",
    "resnet",
    "wide_resnet",
]
