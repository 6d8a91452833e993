"""Registry of the datasets the input pipeline can load, and how to build each one offline.

Adding a dataset is one entry in `_REGISTRY`: its TFDS name, class names, split names, the
command that prepares it and the function that does so.
"""
import dataclasses
import functools
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline needs to know about one dataset (docs/methods/problem_and_data.md §2).

    `prepare_command` is the shell command that builds the dataset; the text "{data_dir}" in
    it stands for the data directory (see `prepare_command_for`). `raw_layout` describes the
    raw files that command reads from --manual_dir ('' when it needs none). `prepare(data_dir,
    manual_dir, corrupt_images)` builds it; manual_dir None means TFDS's default,
    <data_dir>/downloads/manual; corrupt_images ('fail' | 'skip') is what a paper builder does
    with a raw image that cannot be decoded (builder_common.py).
    Class names of datasets whose categories are chosen at build time (vg200) are placeholders
    here; the pipeline takes the prepared dataset's own names (its metadata 'class_names').
    """

    name: str
    tfds_name: str
    class_names: tuple[str, ...]
    train_split: str
    test_split: str
    prepare_command: str
    prepare: Callable[[str, str | None, str], None] = dataclasses.field(repr=False, compare=False)
    raw_layout: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_command_for(self, data_dir: str) -> str:
        """The exact shell command that builds this dataset into data_dir."""
        return self.prepare_command.format(data_dir=data_dir)


def _prepare_digit_scenes(config_name: str, data_dir: str, manual_dir: str | None = None,
                          corrupt_images: str = "fail") -> None:
    """Builds one digit-scenes config into data_dir (offline, a few seconds; no raw data)."""
    del manual_dir, corrupt_images  # generated images: nothing to read or skip
    from mlrpl_jax.data import digit_scenes  # deferred: imports scikit-learn

    builder = digit_scenes.DigitScenes(config=config_name, data_dir=data_dir)
    builder.download_and_prepare()


def _digit_scenes_spec(name: str, config_name: str) -> DatasetSpec:
    from mlrpl_jax.data.digit_scenes import CLASS_NAMES

    return DatasetSpec(
        name=name,
        tfds_name=f"digit_scenes/{config_name}",
        class_names=CLASS_NAMES,
        train_split="train",
        test_split="test",
        prepare_command=f"python -m mlrpl_jax.data.prepare --dataset={name} --data_dir={{data_dir}}",
        prepare=functools.partial(_prepare_digit_scenes, config_name),
    )


_PAPER_BUILDERS = {  # registry name -> (module, builder class, TFDS config)
    "coco2014": ("coco2014", "Coco2014", None),
    "voc2007": ("voc2007", "Voc2007", "default"),
    "voc2007/difficult_ignored": ("voc2007", "Voc2007", "difficult_ignored"),
    "vg200": ("vg200", "Vg200", "reference"),
    "vg200/ours": ("vg200", "Vg200", "ours"),
}
_PAPER_SPLITS = {"coco2014": ("train", "test"), "voc2007": ("trainval", "test"), "vg200": ("train", "test")}


def _paper_module(name: str):
    import importlib

    return importlib.import_module(f"mlrpl_jax.data.{_PAPER_BUILDERS[name][0]}")


def _prepare_paper_dataset(name: str, data_dir: str, manual_dir: str | None = None,
                           corrupt_images: str = "fail") -> None:
    """Builds a paper dataset from the raw files in manual_dir (no network)."""
    import tensorflow_datasets as tfds

    _, class_name, config = _PAPER_BUILDERS[name]
    builder = getattr(_paper_module(name), class_name)(
        config=config, data_dir=data_dir, corrupt_images=corrupt_images)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=download_config)


def _paper_spec(name: str) -> DatasetSpec:
    module_name, _, config = _PAPER_BUILDERS[name]
    module = _paper_module(name)
    class_names = getattr(module, "CLASS_NAMES", None) or module.PLACEHOLDER_CLASS_NAMES
    train_split, test_split = _PAPER_SPLITS[module_name]
    return DatasetSpec(
        name=name,
        tfds_name=f"{module_name}/{config}" if config else module_name,
        class_names=tuple(class_names),
        train_split=train_split,
        test_split=test_split,
        prepare_command=(
            f"python -m mlrpl_jax.data.prepare --dataset={name} --data_dir={{data_dir}} "
            "--manual_dir=<raw data dir>"
        ),
        prepare=functools.partial(_prepare_paper_dataset, name),
        raw_layout=module.RAW_LAYOUT,
    )


_REGISTRY: dict[str, Callable[[], DatasetSpec]] = {
    "digit_scenes": functools.partial(_digit_scenes_spec, "digit_scenes", "default"),
    "digit_scenes/large": functools.partial(_digit_scenes_spec, "digit_scenes/large", "large"),
    "digit_scenes/small": functools.partial(_digit_scenes_spec, "digit_scenes/small", "small"),
    "digit_scenes/tiny": functools.partial(_digit_scenes_spec, "digit_scenes/tiny", "tiny"),
    **{name: functools.partial(_paper_spec, name) for name in _PAPER_BUILDERS},
}


def dataset_names() -> tuple[str, ...]:
    """Names accepted by `get_dataset_spec`."""
    return tuple(sorted(_REGISTRY))


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered under `name`; unknown names raise a ValueError listing valid ones."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown dataset {name!r}. Valid dataset names: {', '.join(dataset_names())}."
        )
    return _REGISTRY[name]()


def prepare_dataset(name: str, data_dir: str, manual_dir: str | None = None,
                    corrupt_images: str = "fail") -> None:
    """Builds dataset `name` into data_dir from the raw data in manual_dir, without network access.

    corrupt_images: 'fail' stops at a raw image that cannot be decoded, naming its path;
    'skip' leaves it out with a warning.
    """
    get_dataset_spec(name).prepare(data_dir, manual_dir, corrupt_images)
