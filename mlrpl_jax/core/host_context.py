"""What a method's host-side hooks (`Method.on_epoch_start`, `on_epoch_end`) may use between
epochs: the data, the device layout and passes of jitted functions over the training set."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator

import jax
import numpy as np

from mlrpl_jax.core import fault_injection, parallel

PyTree = Any


@dataclasses.dataclass(frozen=True)
class HostContext:
    """What host-side hooks may use: the data, the device layout and jitted helpers."""

    data: Any  # mlrpl_jax.data.pipeline.PartialLabelData
    global_batch_size: int
    process_index: int
    process_count: int
    to_global: Callable[[dict], dict]  # local numpy batch -> global sharded arrays
    replicate: Callable[[PyTree], PyTree]  # host PyTree -> arrays replicated over the mesh
    log: Callable[[int, dict], None]  # (step, scalars) -> logs on process 0

    @classmethod
    def on_mesh(
        cls,
        data: Any,
        mesh: jax.sharding.Mesh,
        global_batch_size: int,
        log: Callable[[int, dict], None] = lambda step, scalars: None,
    ) -> HostContext:
        """This process's context over `mesh`; `log` discards the scalars unless given."""
        return cls(
            data=data,
            global_batch_size=global_batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            to_global=functools.partial(parallel.to_global, mesh=mesh),
            replicate=functools.partial(parallel.replicate, mesh=mesh),
            log=log,
        )

    def train_batches(self, epoch: int) -> Iterator[dict]:
        """Local batches of one (augmented, shuffled) training epoch, as hooks need them."""
        return self.data.train_batches(
            epoch,
            self.global_batch_size,
            process_index=self.process_index,
            process_count=self.process_count,
        )

    def inference_pass(
        self, state: Any, features_fn: Callable[[dict, PyTree, jax.Array], dict], epoch: int
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Runs `features_fn(variables, method_state, images)` over one augmented training epoch.

        This is the reference's prototype pass (docs/methods/hst.md §7.3, §8.3, §9.3): inference-mode
        features of the shuffled, augmented training loader. Yields, for every global batch,
        the outputs and the partial labels (B, C) as NumPy arrays that are identical on every
        process (gathered from all of them), so host-side K-means agrees everywhere.
        """
        jitted = jax.jit(lambda st, images: features_fn(st.variables(), st.method_state, images))
        for batch in self.train_batches(epoch):
            global_batch = self.to_global({"image": batch["image"], "labels": batch["labels"]})
            outputs = jitted(state, global_batch["image"])
            fault_injection.signal_if_requested("hook", state.step)
            yield (
                {key: parallel.gather_to_host(value) for key, value in outputs.items()},
                parallel.gather_to_host(global_batch["labels"]),
            )

    def training_set_pass(
        self, state: Any, outputs_fn: Callable[[Any, jax.Array], dict]
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Runs `outputs_fn(state, images)` once over every training image, unaugmented, in
        reference order (the last global batch padded), as a teacher scores the training set
        (docs/methods/ema.md §2). Yields, for every global batch, the outputs and the images'
        'index' (B,) (-1 for padding) as NumPy arrays identical on every process."""
        jitted = jax.jit(outputs_fn)
        for batch in self.data.eval_batches(
            self.global_batch_size,
            split="train",
            process_index=self.process_index,
            process_count=self.process_count,
        ):
            global_batch = self.to_global({"image": batch["image"], "index": batch["index"]})
            outputs = jitted(state, global_batch["image"])
            fault_injection.signal_if_requested("hook", state.step)
            yield (
                {key: parallel.gather_to_host(value) for key, value in outputs.items()},
                parallel.gather_to_host(global_batch["index"]),
            )
