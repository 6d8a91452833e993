"""Asymmetric loss (γ+ = 0, γ- = 4, m = 0.05) with every unknown label a negative
(docs/methods/partial_losses.md §2), on MS-COCO 2014 (C = 80).

    python -m mlrpl_jax.main --config=configs/assume_negative_asl_coco.py \
        --workdir=workdirs/assume_negative_asl_coco \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=coco2014_glove300.npy

The shared network and schedule of the partial-BCE baseline (configs/baseline_coco.py):
ResNet-101 at 448 px, batch 8, Adam lr 1e-5 -> 1e-6 after epoch 9, 20 epochs. VOC 2007 and
VG-200 take the same method after a colon:
--config=configs/baseline_voc.py:assume_negative_asl and
--config=configs/baseline_vg.py:assume_negative_asl.
Preparing DATA and the two files: docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "assume_negative_asl"):
    return paper_config(method, "coco2014")
