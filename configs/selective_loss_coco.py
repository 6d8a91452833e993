"""Class-aware selective loss (Ben-Baruch et al. 2022): unknowns of classes with a known-label
prior above 0.05 and the top-5 likely positives per image ignored, the others negatives
(docs/methods/partial_losses.md §3), on MS-COCO 2014 (C = 80).

    python -m mlrpl_jax.main --config=configs/selective_loss_coco.py \
        --workdir=workdirs/selective_loss_coco \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=coco2014_glove300.npy

The shared network and schedule of the partial-BCE baseline (configs/baseline_coco.py):
ResNet-101 at 448 px, batch 8, Adam lr 1e-5 -> 1e-6 after epoch 9, 20 epochs. VOC 2007 and
VG-200 take the same method after a colon:
--config=configs/baseline_voc.py:selective_loss and --config=configs/baseline_vg.py:selective_loss.
Preparing DATA and the two files: docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "selective_loss"):
    return paper_config(method, "coco2014")
