"""SST on Visual Genome VG-200 (200 classes) with the reference launch script's settings (docs/methods/sst.md §6, App. A).

    python -m mlrpl_jax.main --config=configs/sst_vg.py --workdir=workdirs/sst_vg \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=vg_200_vector.npy

ResNet-101 at 448 px with stem..stage 3 frozen, Adam lr 1e-5 (x0.1 after epoch 9), weight decay
5e-4, batch 8, 20 epochs; pseudo labels from epoch 5, margins 0.95 -> 0.75, loss weights (1, 1,
10, 0.05), bank of 100 positives per class. Set --config.known_ratio for the other label
proportions. Preparing DATA and the two files, and running another method with these settings
(--config=configs/sst_vg.py:<method>): docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "sst"):
    return paper_config(method, "vg200")
