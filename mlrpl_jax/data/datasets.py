"""Registry of the datasets the input pipeline can load, and how to build each one offline.

Adding a dataset is one entry in `_REGISTRY`: its TFDS name, class names, split names, the
command that prepares it and the function that does so.
"""
import dataclasses
import functools
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline needs to know about one dataset (METHODS.md §2).

    `prepare_command` is the shell command that builds the dataset; the text "{data_dir}" in
    it stands for the data directory (see `prepare_command_for`).
    """

    name: str
    tfds_name: str
    class_names: tuple[str, ...]
    train_split: str
    test_split: str
    prepare_command: str
    prepare: Callable[[str], None] = dataclasses.field(repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_command_for(self, data_dir: str) -> str:
        """The exact shell command that builds this dataset into data_dir."""
        return self.prepare_command.format(data_dir=data_dir)


def _prepare_digit_scenes(config_name: str, data_dir: str) -> None:
    """Builds one digit-scenes config into data_dir (offline, a few seconds)."""
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


_REGISTRY: dict[str, Callable[[], DatasetSpec]] = {
    "digit_scenes": functools.partial(_digit_scenes_spec, "digit_scenes", "default"),
    "digit_scenes/tiny": functools.partial(_digit_scenes_spec, "digit_scenes/tiny", "tiny"),
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


def prepare_dataset(name: str, data_dir: str) -> None:
    """Builds dataset `name` into data_dir without any network access."""
    get_dataset_spec(name).prepare(data_dir)
