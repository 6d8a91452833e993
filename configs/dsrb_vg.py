"""DSRB, repaired (docs/methods/dsrb.md §9) on Visual Genome VG-200 (C = 200) with the launch-script settings (docs/methods/hyperparameters.md, Appendix A).

    python -m mlrpl_jax.main --config=configs/dsrb_vg.py --workdir=workdirs/dsrb_vg \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=vg_200_vector.npy

ResNet-101 at 448 px, batch 8, Adam lr 1e-5 -> 1e-6 after epoch 9, 20 epochs; blending and
prototypes from epoch 5. Change the known ratio with --config.known_ratio. Preparing DATA and
the two files, and running another method with these settings
(--config=configs/dsrb_vg.py:<method>): docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "dsrb"):
    return paper_config(method, "vg200")
