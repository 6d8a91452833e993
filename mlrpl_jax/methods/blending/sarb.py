"""SARB: semantic-aware representation blending at instance and prototype level (docs/methods/sarb.md §8).

The shared parts (α, β, instance-level blend ILRB, loss, schedule) are in
representation_blending.py. SARB's prototype level (PLRB, §8.3) blends one unknown class per
image towards one of K per-class K-means prototypes Π (C, K, D) of the known positives'
features, recomputed by a host hook at epochs e_m, e_m + R, ...
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from mlrpl_jax.class_prototypes import PositiveFeatureCollector
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.methods.base import PyTree
from mlrpl_jax.methods.blending import blend
from mlrpl_jax.methods.blending.representation_blending import RepresentationBlending
from mlrpl_jax.models.network import Features


class SARB(RepresentationBlending):
    """SARB (docs/methods/sarb.md §8)."""

    name = "sarb"
    # Our default skips images without unknown labels; the published numbers blended them (§12.3).
    paper_reference_behaviour = {"blend_known_when_no_unknown": True}

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        """Launch-script values (docs/methods/hyperparameters.md, Appendix A)."""
        section = cls.shared_options()
        section.num_prototypes = 10  # K K-means centres per class
        # True reproduces the reference (§12.3): an image without unknown labels blends class 0
        # with a prototype and relabels it 1 - β although it is known. False skips such images.
        section.blend_known_when_no_unknown = False
        return section

    def check_prototype_options(self) -> None:
        if self.options.num_prototypes < 1:
            raise ValueError(
                f"sarb.num_prototypes must be >= 1, got {self.options.num_prototypes}."
            )

    def prototype_table_shape(self) -> tuple[int, ...]:
        """Π (C, K, D)."""
        return (self.info.num_classes, self.options.num_prototypes, self.config.model.feature_dim)

    def prototype_blend(
        self,
        features: Features,
        targets: jax.Array,
        method_state: PyTree,
        beta: jax.Array,
        rng: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """PLRB (§8.3): one prototype index κ per step, one unknown class per image -> (S2, y2)."""
        index_rng, class_rng = jax.random.split(rng)
        prototypes = blend.sarb_prototypes_for_step(method_state["prototypes"], index_rng)  # (C, D)
        mask = blend.choose_blend_classes(
            targets, class_rng, top_k=1, unknown_only=not self.options.blend_known_when_no_unknown
        )
        return blend.prototype_blend(features.semantic, targets, prototypes, mask, beta)

    def prototype_features(
        self, variables: dict[str, PyTree], method_state: PyTree, images: jax.Array
    ) -> dict[str, jax.Array]:
        """Inference-mode outputs the prototype pass needs: semantic features S (B, C, D)."""
        features = self.model.apply(variables, images, train=False, method="extract")
        return {"semantic": features.semantic}

    def compute_prototypes(self, state: Any, epoch: int, host: HostContext) -> np.ndarray:
        """Π (C, K, D): per-class K-means of the known positives' features of one pass (§8.3)."""
        collector = PositiveFeatureCollector(self.info.num_classes, self.config.model.feature_dim)
        for outputs, labels in host.inference_pass(state, self.prototype_features, epoch):
            collector.add(outputs["semantic"], labels)
        seed = int(np.random.SeedSequence([self.config.seed, epoch]).generate_state(1)[0])
        return collector.kmeans(self.options.num_prototypes, seed)
