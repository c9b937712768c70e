"""The model zoo: stax networks in NTK parameterization (``fc``, ``cnn``, ``wide_resnet``, ``resnet``)."""

from nt_pntk._src.experiments.models import (
    B_STD,
    MAX_LAYERS,
    MAX_WIDTH,
    MODELS,
    RESNET_STAGES,
    W_STD,
    Model,
    builder_options,
    cnn,
    fc,
    get_model,
    parameter_bytes,
    resnet,
    wide_resnet,
)

__all__ = [
    "B_STD",
    "MAX_LAYERS",
    "MAX_WIDTH",
    "MODELS",
    "RESNET_STAGES",
    "W_STD",
    "Model",
    "builder_options",
    "cnn",
    "fc",
    "get_model",
    "parameter_bytes",
    "resnet",
    "wide_resnet",
]
