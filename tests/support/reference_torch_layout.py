"""The reference's head and whole-model state-dict layouts, for the parity tests.

Maps the authors' PyTorch names of the shared head (SemanticDecoupling, GatedGNN, classifiers),
of the whole model and of the SST/HST co-occurrence head onto our Flax variables. Only the
tests read the reference's trained tensors (tests/data/vectors); the package imports backbone
weights only (mlrpl_jax.models.torch_layout).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mlrpl_jax.methods.semantic_transfer.pseudo_labels import PositiveBank
from mlrpl_jax.models import torch_layout
from mlrpl_jax.models.torch_layout import KeyMap, StateDict, Variables

# Reference tensors that are module constants here, not variables: the label embeddings E and
# the graph A, A^T (the reference stores the graph twice, once in the GGNN). Build the model
# from them with head_constants_from_torch instead.
HEAD_CONSTANT_KEYS = (
    "wordFeatures",
    "inMatrix",
    "outMatrix",
    "GraphNeuralNetwork.inMatrix",
    "GraphNeuralNetwork.outMatrix",
)

# Keys of method-specific parts (SST/HST co-occurrence head, SARB/DSRB alpha and beta, HST
# margins); returned untouched as "unused" so that method plug-ins can map them.
METHOD_SPECIFIC_PREFIXES = ("intra_",)
METHOD_SPECIFIC_KEYS = ("alpha", "beta", "intraMargin", "interMargin")


def semantic_decoupling_key_map() -> KeyMap:
    """Reference SemanticDecoupling names (fc1..fc4) -> models.semantic_decoupling.SemanticDecoupling."""
    keys = torch_layout.linear_keys("fc1", ("feature_projection",), bias=False)
    keys.update(torch_layout.linear_keys("fc2", ("word_projection",), bias=False))
    keys.update(torch_layout.linear_keys("fc3", ("hidden",)))
    keys.update(torch_layout.linear_keys("fc4", ("score",)))
    return keys


def gated_gnn_key_map() -> KeyMap:
    """Reference GatedGNN names (fc_{1,2,3}_{w,u}) -> models.ggnn.GatedGNN (update, reset, candidate)."""
    keys: KeyMap = {}
    for index, gate in ((1, "update"), (2, "reset"), (3, "candidate")):
        keys.update(torch_layout.linear_keys(f"fc_{index}_w", (f"message_{gate}",)))
        keys.update(torch_layout.linear_keys(f"fc_{index}_u", (f"state_{gate}",)))
    return keys


def element_wise_key_map() -> KeyMap:
    """Reference Element_Wise_Layer (weight (C, D), bias (C,)) -> models.classifier.ElementWiseLinear."""
    return {
        "weight": ("params", ("kernel",), torch_layout.same_layout),
        "bias": ("params", ("bias",), torch_layout.same_layout),
    }


def head_key_map() -> KeyMap:
    """Reference head state-dict names -> variables of models.network.SharedHead."""
    keys: KeyMap = {
        "changeChannel.0.weight": ("params", ("reduction_conv", "kernel"), torch_layout.conv_layout)
    }
    keys.update(torch_layout.batch_norm_keys("changeChannel.1", ("reduction_bn",)))
    keys.update(
        torch_layout.nested_key_map(
            semantic_decoupling_key_map(), "SemanticDecoupling.", ("semantic_decoupling",)
        )
    )
    keys.update(torch_layout.nested_key_map(gated_gnn_key_map(), "GraphNeuralNetwork.", ("ggnn",)))
    keys.update(torch_layout.linear_keys("fc", ("output_head", "fc")))
    keys.update(
        torch_layout.nested_key_map(
            element_wise_key_map(), "classifiers.", ("output_head", "classifiers")
        )
    )
    return keys


def network_key_map(depth: int) -> KeyMap:
    """Whole reference model ('backbone.' + torchvision names, then head names) -> SharedNetwork."""
    keys = torch_layout.nested_key_map(
        torch_layout.resnet_key_map(depth), "backbone.", ("backbone",)
    )
    keys.update(torch_layout.nested_key_map(head_key_map(), "", ("head",)))
    return keys


def _is_method_specific(key: str) -> bool:
    return key in METHOD_SPECIFIC_KEYS or key.startswith(METHOD_SPECIFIC_PREFIXES)


def _is_skipped(key: str) -> bool:
    """Entries that carry nothing for us: BN counters, the backbone's ImageNet fc, the head constants."""
    return (
        key.endswith(torch_layout.BN_COUNTER)
        or key in HEAD_CONSTANT_KEYS
        or key in ("backbone.fc.weight", "backbone.fc.bias")
    )


def _split_method_specific(
    state_dict: StateDict,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(entries to convert, method-specific entries returned as unused)."""
    unused = {k: np.asarray(v) for k, v in state_dict.items() if _is_method_specific(k)}
    kept = {k: v for k, v in state_dict.items() if k not in unused and not _is_skipped(k)}
    return kept, unused


def head_variables_from_torch(state_dict: StateDict) -> tuple[Variables, dict[str, np.ndarray]]:
    """Reference head state dict -> (SharedHead variables, unused method-specific entries).

    Constant tensors (HEAD_CONSTANT_KEYS) and BN counters are skipped; any other key that is
    neither a head key nor method-specific is an error.
    """
    kept, unused = _split_method_specific(state_dict)
    return torch_layout.variables_from_torch(
        kept, head_key_map(), "the reference's shared head"
    ), unused


def network_variables_from_torch(
    state_dict: StateDict, depth: int
) -> tuple[Variables, dict[str, np.ndarray]]:
    """Whole reference model state dict -> (SharedNetwork variables, unused method-specific entries).

    Skips 'backbone.fc.*', BN counters and the constant tensors (HEAD_CONSTANT_KEYS).
    """
    kept, unused = _split_method_specific(state_dict)
    return torch_layout.variables_from_torch(
        kept, network_key_map(depth), f"the reference model with ResNet-{depth}"
    ), unused


def head_constants_from_torch(state_dict: StateDict) -> tuple[np.ndarray, np.ndarray]:
    """(word_embeddings E (C, D_w), adjacency A (C, C)) from the reference's constant tensors.

    Checks that the stored out-matrix is A^T, which the GGNN assumes (docs/methods/network.md §4.4).
    """
    for key in ("wordFeatures", "inMatrix", "outMatrix"):
        if key not in state_dict:
            raise KeyError(
                f"State dict has no '{key}'; pass the reference model's full state dict."
            )
    adjacency = np.asarray(state_dict["inMatrix"], dtype=np.float32)
    if not np.array_equal(np.asarray(state_dict["outMatrix"], dtype=np.float32), adjacency.T):
        raise ValueError(
            "'outMatrix' is not the transpose of 'inMatrix'; the shared network assumes out = in^T."
        )
    return np.asarray(state_dict["wordFeatures"], dtype=np.float32), adjacency


_TORCH_TO_FLAX = {
    "intra_fc_1": "class_projection",
    "intra_fc_2": "pair_hidden",
    "intra_fc_3": "pair_output",
}


def cooccurrence_variables_from_torch(
    state_dict: Mapping[str, np.ndarray],
) -> dict[str, dict[str, np.ndarray]]:
    """Reference 'intra_*' state-dict entries -> CooccurrenceHead params (docs/methods/implementation_notes.md, Appendix B).

    Linear weights (out, in) become kernels (in, out); the per-pair classifier keeps (P, H).
    Other keys of ``state_dict`` are ignored; the result goes under ``{'params': ...}``.
    """
    required = [
        f"{name}.{kind}"
        for name in (*_TORCH_TO_FLAX, "intra_classifiers")
        for kind in ("weight", "bias")
    ]
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise KeyError(
            f"State dict lacks the co-occurrence head entries {missing}; pass the SST/HST model's "
            "state dict with wrapper prefixes such as 'module.' stripped."
        )

    def array(key: str) -> np.ndarray:
        return np.asarray(state_dict[key], dtype=np.float32)

    params = {}
    for torch_name, flax_name in _TORCH_TO_FLAX.items():
        weight = array(f"{torch_name}.weight")
        if weight.ndim != 2:
            raise ValueError(
                f"torch key '{torch_name}.weight': expected a Linear weight (out, in), got {weight.shape}"
            )
        params[flax_name] = {
            "kernel": np.ascontiguousarray(weight.T),
            "bias": array(f"{torch_name}.bias"),
        }
    params["pair_classifiers"] = {
        "kernel": array("intra_classifiers.weight"),
        "bias": array("intra_classifiers.bias"),
    }
    return params


def blending_params_from_torch(unused: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference's `alpha`, `beta` entries (returned as unused by head_variables_from_torch) as our params."""
    return {name: np.asarray(unused[name], np.float32).reshape(()) for name in ("alpha", "beta")}


def bank_rows_newest_first(bank: PositiveBank) -> jax.Array:
    """Bank rows (C, N, D) ordered newest first, empty slots last: the reference's layout (docs/methods/sst.md §6.3)."""
    rows, next_slot = bank["rows"], bank["next_slot"]
    size = rows.shape[1]
    order = (next_slot[:, None] - 1 - jnp.arange(size, dtype=jnp.int32)[None, :]) % size  # (C, N)
    return jnp.take_along_axis(rows, order[..., None], axis=1)


def positive_bank_from_newest_first(rows: jax.Array) -> PositiveBank:
    """Bank holding reference-layout rows (C, N, D) (newest first), e.g. an imported bank."""
    rows = jnp.asarray(rows, jnp.float32)
    return {"rows": rows[:, ::-1], "next_slot": jnp.zeros((rows.shape[0],), jnp.int32)}


def co_positive_adjacency(targets: jax.Array) -> jax.Array:
    """A_{c,i,j} = clip([t_{i,c} = 1] [t_{j,c} = 1] + [i = j], 0, 1): (B, C) -> (C, B, B) (the
    reference's inter-image adjacency helper, docs/methods/reference_defects.md §12.4)."""
    positive = (jnp.asarray(targets) == 1).T  # (C, B)
    eye = jnp.eye(positive.shape[1], dtype=bool)
    return ((positive[:, :, None] & positive[:, None, :]) | eye[None]).astype(jnp.float32)
