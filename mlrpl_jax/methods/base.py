"""The plug-in interface every method implements.

A method owns four things and nothing else:
  * its model (the shared network of docs/methods/network.md §4, possibly with extra heads),
  * its loss, computed inside the jitted train step from (variables, method state, batch),
  * its method state (banks, prototypes, threshold statistics, margins): a PyTree that is
    updated inside the step, replicated over the mesh and checkpointed with the rest,
  * host-side hooks run between epochs (K-means prototypes, margin schedules).
The train loop (train.py) calls only this interface. The loss never sees the hidden complete
labels: the step strips them from its batch and hands them to `diagnostics` after the gradient.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.data.info import DataInfo
from mlrpl_jax.models.network import SharedHead, SharedNetwork

PyTree = Any
# The batch key under which the train step keeps the partial labels once `Method.training_labels`
# has replaced the batch's 'labels' (and LogicMix has mixed both alike).
PARTIAL_LABELS = "partial_labels"
# The arguments of SharedNetwork that its head (SharedHead) takes too.
HEAD_ARGUMENTS = (
    "num_classes",
    "word_embeddings",
    "adjacency",
    "feature_dim",
    "attention_dim",
    "output_dim",
    "ggnn_steps",
    "dtype",
)


@flax.struct.dataclass
class StepContext:
    """Where the step is in training; everything a loss may depend on besides the data."""

    epoch: jax.Array  # int32 scalar, 0-based
    step_in_epoch: jax.Array  # int32 scalar, i in docs/methods/losses.md §5.4
    rng: jax.Array  # PRNG key for this step's in-step randomness
    steps_per_epoch: int = flax.struct.field(pytree_node=False)
    # The model EMA's variables {'params', 'batch_stats'} (TrainState.ema_variables) before this
    # step's update, for a loss that asks for them (`Method.model_ema_in_loss`); else None, so
    # the steps of every other method trace exactly as without the field.
    ema_variables: PyTree = None


@flax.struct.dataclass
class LossAux:
    """Everything a loss returns besides the scalar it is differentiated on."""

    batch_stats: PyTree  # updated BN running statistics
    method_state: PyTree  # updated method state
    metrics: dict[str, jax.Array]  # scalars to log (averaged over logging windows)
    # What `Method.diagnostics` needs from the loss (e.g. its pseudo labels); neither logged
    # nor differentiated.
    diagnostic_inputs: PyTree = flax.struct.field(default_factory=dict)


_REGISTERED: dict[str, type["Method"]] = {}


def registered_method_classes() -> dict[str, type["Method"]]:
    """{name: class} of the Method subclasses defined so far (see mlrpl_jax.methods)."""
    return dict(_REGISTERED)


class Method(abc.ABC):
    """Base class; subclasses define at least `loss`.

    A subclass that sets `name` is a method `config.method` can select: it registers itself
    when defined. Subclasses without a `name` (shared bases of a family) are not selectable.
    Besides its options (`default_config`) a method declares the class attributes below; the
    config factories (config.py) and SATL read them, so no shared code names a method.
    """

    name: ClassVar[str]
    # Global batch size of the method's launch script on the paper datasets.
    paper_batch_size: ClassVar[int] = 8
    # Options whose default is our repair of a reference defect, set back to the reference's
    # behaviour in the paper configs because the published numbers came from it.
    paper_reference_behaviour: ClassVar[dict[str, Any]] = {}
    # Options weighting the method's own pseudo-label losses, set to 0 when SATL's thresholds
    # replace them (`satl.replace_base_pseudo_labels`); None: the method cannot have them replaced.
    replaced_pseudo_label_weights: ClassVar[tuple[str, ...] | None] = ()
    # Options counted in epochs ('epochs': start epochs, intervals) or applied per epoch
    # ('per_epoch': decays); configs with a shorter schedule rescale them (config.py).
    schedule_options: ClassVar[dict[str, str]] = {}
    # config.ema.decay the config factories set for this method (0: no model EMA); a method whose
    # hooks read the EMA weights (TrainState.ema_variables) needs one.
    model_ema_decay: ClassVar[float] = 0.0
    # Whether the step may train on LogicMix batches (config.logicmix, docs/methods/logicmix.md
    # §4): False for methods whose step keeps state from the batch's rows as single images
    # (feature banks, score statistics), which a mixed row would corrupt.
    supports_logicmix: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return
        previous = _REGISTERED.get(cls.name)
        where = (cls.__module__, cls.__qualname__)
        if previous is not None and (previous.__module__, previous.__qualname__) != where:
            raise ValueError(
                f"method name '{cls.name}' of {cls.__module__}.{cls.__qualname__} is "
                f"already taken by {previous.__module__}.{previous.__qualname__}"
            )
        _REGISTERED[cls.name] = cls

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        info: DataInfo,
        word_embeddings: np.ndarray,
        adjacency: np.ndarray,
    ):
        self.config = config
        self.info = info
        self.options = self.method_options(config)
        self.check_options()
        self.model = self.build_model(word_embeddings, adjacency)

    @classmethod
    def model_ema_in_loss(cls, config: ml_collections.ConfigDict) -> str:
        """The option by which the loss of `config` reads the model EMA (`ctx.ema_variables`),
        e.g. "satl.score_source='ema_teacher'" (benchmarks/satl_threshold_designs.py), or ''
        when it does not. Only then does the step pass the EMA to the loss, and config
        validation requires config.ema.decay > 0."""
        del config
        return ""

    def check_options(self) -> None:
        """Raises ValueError, before anything is built, on option values the method cannot use."""

    def check_training_labels(self) -> None:
        """Raises ValueError, before training, if the partial labels cannot support this method."""

    def first_full_epoch(self) -> int:
        """First epoch whose steps run every loss term (warm-ups over); the dry run trains in it."""
        return 0

    def require_known_positive_per_class(self, needed_for: str) -> None:
        """ValueError before training naming every class without a known positive training label.

        For methods whose per-class statistics (`needed_for`, e.g. K-means prototypes) are
        computed from the known positives of each class and are undefined without any.
        """
        counts = np.sum(self.info.train_partial_labels == 1, axis=0)  # (C,)
        missing = np.flatnonzero(counts == 0)
        if missing.size:
            names = ", ".join(f"{self.info.spec.class_names[c]!r} (index {c})" for c in missing)
            raise ValueError(
                f"{self.name}: no known positive training label for class {names} at "
                f"known_ratio={self.config.known_ratio}, so its {needed_for} cannot be computed. "
                "Use a larger known_ratio or another seed, or a method without per-class "
                "prototypes (baseline, sst)."
            )

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict | None:
        """The method's own config section (config.<name>), or None if it has no options."""
        return None

    @classmethod
    def config_sections(
        cls, config: ml_collections.ConfigDict
    ) -> dict[str, ml_collections.ConfigDict]:
        """Config sections a config of this method may hold, by name, with their defaults."""
        section = cls.default_config()
        return {} if section is None else {cls.name: section}

    @classmethod
    def method_options(cls, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """config.<name> laid over `default_config()` (a config without the section gets the defaults)."""
        defaults = cls.default_config()
        options = ml_collections.ConfigDict(defaults.to_dict() if defaults is not None else {})
        if cls.name in config:
            options.update(config[cls.name].to_dict())
        return options

    def build_model(self, word_embeddings: np.ndarray, adjacency: np.ndarray) -> nn.Module:
        """The method's Flax model: `network` around `base_network`."""
        return self.network(self.base_network(word_embeddings, adjacency))

    def base_network(self, word_embeddings: np.ndarray, adjacency: np.ndarray) -> nn.Module:
        """The shared network of docs/methods/network.md §4 (images -> features -> logits), or
        with data.feature_cache its head alone (cached backbone maps -> features -> logits)."""
        kwargs = network_kwargs(self.config, self.info.num_classes, word_embeddings, adjacency)
        if self.config.data.feature_cache:
            return SharedHead(**{name: kwargs[name] for name in HEAD_ARGUMENTS})
        return SharedNetwork(**kwargs)

    def network(self, base: nn.Module) -> nn.Module:
        """The method's model around `base` (a SharedNetwork, or a SharedHead that reads
        backbone feature maps in head-only parity tests). Every parameter the method learns
        (heads, margins, blend weights) is declared in this Flax module."""
        return base

    def init_variables(self, rng: jax.Array, image_shape: tuple[int, ...]) -> dict[str, PyTree]:
        """Model variables {'params', 'batch_stats'} for images of `image_shape` (B, H, W, 3)."""
        return self.model.init(rng, jnp.zeros(image_shape, jnp.float32), train=False)

    def init_method_state(self) -> PyTree:
        return {}

    def training_labels(self, batch: dict[str, jax.Array], method_state: PyTree) -> jax.Array:
        """The labels (B, C) in {-1, 0, +1} the step trains on, from the un-mixed batch (without
        the hidden labels) and the method state before the step: the partial labels by default.

        The step calls it before LogicMix, so a mixed row ORs its images' training labels
        (docs/methods/logicmix.md §4); the loss then reads them as the batch's 'labels', and the
        partial labels stay under PARTIAL_LABELS. A method that completes labels from per-image
        state (e.g. pseudo labels by 'index') does it here, never in its loss.
        """
        del method_state
        return batch["labels"]

    def active_params(self, params: PyTree, epoch: jax.Array) -> PyTree | None:
        """Per-leaf booleans: which parameters took part in this step's backward pass.

        Parameters that are absent from the reference's graph before some epoch (SARB's α, β,
        HST's margins) must not be touched by Adam until then (docs/methods/training.md §10.2). None means
        every parameter is active.
        """
        return None

    def project_params(self, params: PyTree) -> PyTree:
        """Projection applied after each optimiser update (e.g. clamping α, β to [0, 1])."""
        return params

    @abc.abstractmethod
    def loss(
        self,
        variables: dict[str, PyTree],
        method_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> tuple[jax.Array, LossAux]:
        """Scalar training loss of one global batch (train-mode forward) and its aux outputs."""

    def diagnostics(
        self,
        inputs: PyTree,
        method_state: PyTree,
        batch: dict[str, jax.Array],
        complete_labels: jax.Array,
        ctx: StepContext,
    ) -> tuple[dict[str, jax.Array], PyTree]:
        """Measurements against the hidden complete labels (B, C) in {-1, +1}, inside the step
        after the gradient: the only code that sees them. `inputs` is the loss's
        `LossAux.diagnostic_inputs`, `method_state` its updated method state and `batch` the
        batch the loss saw: its 'labels' are `training_labels`, its PARTIAL_LABELS the partial
        labels. Returns (scalars merged into the logged metrics, the method state,
        in which diagnostic counts may accumulate). None by default."""
        del inputs, batch, complete_labels, ctx
        return {}, method_state

    def predict(
        self, variables: dict[str, PyTree], method_state: PyTree, images: jax.Array
    ) -> jax.Array:
        """Inference-mode logits (B, C) used for evaluation."""
        return self.model.apply(variables, images, train=False).logits

    def on_epoch_start(self, state: Any, epoch: int, host: HostContext) -> Any:
        """Host hook before the first step of `epoch` (not re-run when resuming mid-epoch)."""
        return state

    def on_epoch_end(self, state: Any, epoch: int, host: HostContext) -> Any:
        """Host hook after `epoch` has been trained and evaluated, before its checkpoint."""
        return state


def network_kwargs(
    config: ml_collections.ConfigDict,
    num_classes: int,
    word_embeddings: np.ndarray,
    adjacency: np.ndarray,
) -> dict[str, Any]:
    """Constructor arguments of the shared network from config.model."""
    model = config.model
    return dict(
        num_classes=num_classes,
        word_embeddings=word_embeddings,
        adjacency=adjacency,
        backbone_name=model.backbone,
        depth=model.depth,
        width=model.width,
        extra_pool=model.extra_pool,
        freeze_early_stages=model.freeze_early_stages,
        feature_dim=model.feature_dim,
        attention_dim=model.attention_dim,
        output_dim=model.output_dim,
        ggnn_steps=model.ggnn_steps,
        dtype=jnp.dtype(model.dtype),
        conv_impl=model.conv_impl,
        frozen_dtype=jnp.bfloat16 if model.frozen_dtype == "bfloat16" else None,
    )
