"""LogicMix: rows of the batch replaced by the mean of several of its images, their partial labels
combined by logical OR (docs/methods/logicmix.md).

A mixed label is positive if any mixed image has it as a known positive, negative if every mixed
image has it as a known negative, and unknown otherwise. The labels mixed are the method's
training labels (Method.training_labels): the partial labels, or for the EMA teacher the partial
labels completed by its pseudo labels, as in the published recipe. Mixing runs inside the jitted
train step (core/train.py) on the global batch with a key derived from the step's key, so a run
resumes exactly; it acts on batch['image'] whatever its shape (pixels or feature maps).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from mlrpl_jax.methods.base import PARTIAL_LABELS

# Batch keys combined by the OR rule: the training labels (Method.training_labels, e.g. partial
# labels completed by pseudo labels), the partial labels and the hidden complete labels, so that
# the diagnostics measure the rows the loss trained on.
LABEL_KEYS = ("labels", PARTIAL_LABELS, "complete_labels")
# Folded into the step's key for the mixing draws, so the method's own draws are unchanged.
RNG_STREAM = 0x4C4D

Batch = dict[str, jax.Array]
BatchMixer = Callable[[Batch, jax.Array], tuple[Batch, dict[str, jax.Array]]]


def logical_or_labels(labels: jax.Array, used: jax.Array) -> jax.Array:
    """The OR of the used images' partial labels: (B, K, C) in {-1, 0, +1}, used (B, K) -> (B, C).

    +1 if a used entry is positive, -1 if every used entry is negative, else 0 (unknown).
    """
    used = used[:, :, None]  # (B, K, 1)
    any_positive = jnp.any(used & (labels > 0), axis=1)
    all_negative = jnp.all(~used | (labels < 0), axis=1)
    return jnp.where(any_positive, 1.0, jnp.where(all_negative, -1.0, 0.0)).astype(labels.dtype)


def mixing_plan(
    rng: jax.Array, mask: jax.Array, probability: float, min_images: int, max_images: int
) -> tuple[jax.Array, jax.Array]:
    """Which rows each row mixes: partners (B, K) int32 and used (B, K) bool, K = max_images.

    A real row (mask > 0) is mixed with probability `probability`, then with k - 1 partners,
    k uniform in [min_images, max_images], drawn with replacement from the batch's real rows;
    column 0 is the row itself. An unmixed row uses only column 0.
    """
    batch_size = mask.shape[0]
    mix_key, count_key, partner_key = jax.random.split(rng, 3)
    real = mask > 0
    mixed = real & jax.random.bernoulli(mix_key, probability, (batch_size,))
    count = jax.random.randint(count_key, (batch_size,), min_images, max_images + 1)
    count = jnp.where(mixed, count, 1)
    partner_logits = jnp.where(real, 0.0, -jnp.inf)  # (B,): uniform over the real rows
    partners = jax.random.categorical(
        partner_key, partner_logits, shape=(batch_size, max_images - 1)
    )
    partners = jnp.concatenate([jnp.arange(batch_size)[:, None], partners], axis=1)
    used = jnp.arange(max_images)[None, :] < count[:, None]
    return partners.astype(jnp.int32), used


def mix_batch(batch: Batch, partners: jax.Array, used: jax.Array) -> Batch:
    """`batch` with each row's image the mean of its used partners' images and its LABEL_KEYS
    OR-combined; other keys (index, mask) stay the row's own. Unmixed rows are returned as is."""
    mixed = used[:, 1:].any(axis=1)  # (B,)
    images = batch["image"]  # (B, ...)
    weights = used / used.sum(axis=1, keepdims=True)  # (B, K)
    total = jnp.zeros(images.shape, jnp.float32)
    for column in range(partners.shape[1]):
        weight = weights[:, column].reshape((-1,) + (1,) * (images.ndim - 1))
        total = total + weight * jnp.take(images, partners[:, column], axis=0).astype(jnp.float32)
    row_mixed = mixed.reshape((-1,) + (1,) * (images.ndim - 1))
    result = dict(batch, image=jnp.where(row_mixed, total.astype(images.dtype), images))
    for key in LABEL_KEYS:
        if key in batch:
            gathered = jnp.take(batch[key], partners, axis=0)  # (B, K, C)
            result[key] = jnp.where(mixed[:, None], logical_or_labels(gathered, used), batch[key])
    return result


def batch_mixer(options: ml_collections.ConfigDict) -> BatchMixer:
    """(batch, step key) -> (mixed batch, scalars to log) for config.logicmix; with probability
    0 the batch passes through untouched and nothing is logged."""
    if options.probability == 0:
        return lambda batch, rng: (batch, {})

    def mix(batch: Batch, rng: jax.Array) -> tuple[Batch, dict[str, jax.Array]]:
        partners, used = mixing_plan(
            jax.random.fold_in(rng, RNG_STREAM),
            batch["mask"],
            options.probability,
            options.min_images,
            options.max_images,
        )
        real = jnp.maximum(jnp.sum(batch["mask"] > 0), 1)
        fraction = jnp.sum(used[:, 1:].any(axis=1)) / real
        return mix_batch(batch, partners, used), {"logicmix_fraction": fraction}

    return mix
