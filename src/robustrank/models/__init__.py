"""Models: the registry, the paper's FCNN and CNN, weight layers of any module, checkpoints.

* :mod:`.registry` -- ``@register_model``, ``create_model``, ``list_models``, import paths.
* :mod:`.paper` -- the paper's FCNN and CNN (Section 5).
* :mod:`.layers` -- weight layers by module path in forward order, ``weight_matrices``.
* :mod:`.checkpoint` -- safetensors + JSON checkpoints.
* :mod:`.layout` -- channels-last storage on CPU.
* :mod:`.structured` -- masked and factorised weights (exact structure) as parametrizations.
"""

from .._io import atomic_write_bytes
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_header, save_checkpoint
from .layers import (
    LayerDict,
    LayerOrderUnknown,
    WeightLayer,
    as_matrix,
    is_weight_layer,
    match_layers,
    named_weight_layers,
    probe_forward_order,
    select_layers,
    weight_layers,
    weight_matrices,
)
from .layout import prefers_channels_last, use_fast_layout
from .paper import CNN, FCNN
from .registry import (
    ModelEntry,
    UntrustedCodeError,
    create_model,
    get_model,
    get_model_entry,
    input_shape_of,
    is_import_path,
    list_models,
    model_spec,
    output_classes,
    register_model,
    resolve_factory,
    set_input_shape,
)
from .structured import (
    LowRank,
    LowRankSparse,
    Masked,
    ScoredMask,
    StructureError,
    apply_structure,
    check_rank,
    kept_count,
    layer_structure,
    remove_structure,
    stored_params,
    structure_of,
    structured_layers,
    top_k_mask,
)

__all__ = [
    "FCNN",
    "CNN",
    "CheckpointError",
    "ModelEntry",
    "UntrustedCodeError",
    "WeightLayer",
    "LayerDict",
    "LayerOrderUnknown",
    "create_model",
    "list_models",
    "get_model",
    "get_model_entry",
    "register_model",
    "is_import_path",
    "resolve_factory",
    "model_spec",
    "input_shape_of",
    "output_classes",
    "set_input_shape",
    "weight_layers",
    "named_weight_layers",
    "weight_matrices",
    "is_weight_layer",
    "match_layers",
    "select_layers",
    "probe_forward_order",
    "as_matrix",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_header",
    "atomic_write_bytes",
    "use_fast_layout",
    "prefers_channels_last",
    "Masked",
    "ScoredMask",
    "LowRank",
    "LowRankSparse",
    "StructureError",
    "apply_structure",
    "kept_count",
    "check_rank",
    "structured_layers",
    "layer_structure",
    "remove_structure",
    "stored_params",
    "structure_of",
    "top_k_mask",
]
