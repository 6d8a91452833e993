"""Tiny synthetic training for method plug-ins: the real jitted step and the real host hooks on a
mesh of chosen devices, with in-memory batches standing in for the data pipeline."""
import functools
import json
import os

import jax
import numpy as np

from mlrpl_jax import checkpointing, optim, parallel, train
from mlrpl_jax.config import base_config
from mlrpl_jax.data.label_embeddings import random_embeddings
from mlrpl_jax.data.label_graph import label_adjacency
from mlrpl_jax.data.pipeline import PartialLabelData
from mlrpl_jax.data.synthetic import synthetic_batch, synthetic_data_info
from mlrpl_jax.methods.base import HostContext
from mlrpl_jax.train import create_train_state, jit_train_step, make_train_step
from mlrpl_jax.train_state import split_params
from tiny_config import tiny_digit_config

NUM_CLASSES = 6
IMAGE_SIZE = 32
BATCH_SIZE = 8
STEPS_PER_EPOCH = 2
PASS_BATCHES = 4  # batches of a host-hook pass over the "training loader"


def tiny_config(method_name, **section):
    config = base_config()
    config.method = method_name
    config.batch_size = BATCH_SIZE
    config.data.image_size = IMAGE_SIZE
    config.embeddings.kind = "random"
    config.embeddings.dim = 12
    config.model.update(depth=18, width=8, extra_pool=False, freeze_early_stages=True,
                        feature_dim=16, attention_dim=8, output_dim=16)
    config.optim.lr = 1e-3
    config[method_name] = section
    return config


class SyntheticTrainingData:
    """Seeded synthetic batches: `batch(step)` for the step, `train_batches` for host passes."""

    def __init__(self):
        self.info = synthetic_data_info(NUM_CLASSES, 64, known_ratio=0.5, positive_rate=0.4)

    def batch(self, step):
        return synthetic_batch(self.info, BATCH_SIZE, IMAGE_SIZE, seed=step)

    def train_batches(self, epoch, global_batch_size, process_index=0, process_count=1):
        del process_index, process_count  # one process
        return [synthetic_batch(self.info, global_batch_size, IMAGE_SIZE, seed=1000 * (epoch + 1) + k)
                for k in range(PASS_BATCHES)]


def build(method_class, config, data):
    method = method_class(config, data.info, random_embeddings(NUM_CLASSES, 12),
                          label_adjacency(data.info.train_partial_labels))
    optimizer = optim.build_optimizer(config.optim, STEPS_PER_EPOCH)
    return method, optimizer, create_train_state(method, optimizer, config)


class Runner:
    """Trains `method` on a mesh of `devices`, calling on_epoch_start at every epoch boundary."""

    def __init__(self, method, optimizer, data, devices):
        self.method, self.data = method, data
        self.mesh = parallel.create_mesh(devices)
        self.step_fn = jit_train_step(make_train_step(method, optimizer, STEPS_PER_EPOCH), self.mesh)
        self.host = HostContext(data=data, global_batch_size=BATCH_SIZE, process_index=0,
                                process_count=1,
                                to_global=functools.partial(parallel.to_global, mesh=self.mesh),
                                replicate=functools.partial(parallel.replicate, mesh=self.mesh),
                                log=lambda step, scalars: None)

    def replicate(self, state):
        return parallel.replicate(state, self.mesh)

    def run(self, state, num_steps):
        """(state after num_steps more steps, the steps' scalars)."""
        history = []
        for _ in range(num_steps):
            step = int(jax.device_get(state.step))
            if step % STEPS_PER_EPOCH == 0:
                state = self.method.on_epoch_start(state, step // STEPS_PER_EPOCH, self.host)
            state, scalars = self.step_fn(state, parallel.to_global(self.data.batch(step), self.mesh))
            history.append(jax.device_get(scalars))
        return state, history


def assert_trees_close(a, b, rtol, atol, scaled_atol=0.0):
    """Leaf-wise allclose; `scaled_atol` adds an absolute tolerance relative to the leaf's scale."""
    flat_a, tree_a = jax.tree.flatten(jax.device_get(a))
    flat_b, tree_b = jax.tree.flatten(jax.device_get(b))
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        x, y = np.asarray(x), np.asarray(y)
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol + scaled_atol * scale)


def digit_run_config(method_name, data_dir, epochs, **section):
    """A short real run on the tiny digit scenes (96 training scenes, 12 steps per epoch)."""
    config = tiny_digit_config(method_name, batch_size=8, epochs=epochs, data_dir=data_dir)
    config.logging.every_steps = 6
    config.checkpoint.keep_last = 1
    config[method_name] = section
    return config


def restore_final_state(config, workdir):
    """The TrainState of the latest checkpoint that train_and_evaluate wrote in `workdir`."""
    data = PartialLabelData(dataset=config.data.name, data_dir=config.data.data_dir,
                            image_size=config.data.image_size, known_ratio=config.known_ratio,
                            seed=config.seed)
    method = train.build_method(config, data)
    optimizer = optim.build_optimizer(config.optim, data.steps_per_epoch(config.batch_size))
    template = parallel.replicate(create_train_state(method, optimizer, config), parallel.create_mesh())
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep_last=1,
                                              keep_best=0, async_save=False)
    state, _ = checkpointer.restore(checkpointer.latest_step(), template)
    checkpointer.close()
    return state


def logged_train_metrics(workdir):
    """The train/* scalars logged by train_and_evaluate, one dict per logging window."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    return [entry for entry in entries if "train/loss" in entry]


def paper_trainable_parameter_count(method_class, num_classes):
    """Trainable parameters of the method's ResNet-101 paper model (shapes only, nothing run)."""
    config = base_config()
    config.method = method_class.name
    method = method_class(config, synthetic_data_info(num_classes, 4, known_ratio=0.5),
                          np.zeros((num_classes, 300), np.float32), np.eye(num_classes, dtype=np.float32))
    shapes = jax.eval_shape(functools.partial(method.init_variables, image_shape=(1, 448, 448, 3)),
                            jax.random.PRNGKey(0))
    trainable, _ = split_params(shapes["params"], config.model.freeze_early_stages)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(trainable))
