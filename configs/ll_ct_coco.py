"""LL-Ct, large-loss temporary correction (Kim et al. 2022): assume negative, then count the
unknowns of largest loss as positives, Δ_rel = 0.1 % more of them per epoch
(docs/methods/partial_losses.md §4), on MS-COCO 2014 (C = 80).

    python -m mlrpl_jax.main --config=configs/ll_ct_coco.py \
        --workdir=workdirs/ll_ct_coco \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=coco2014_glove300.npy

The shared network and schedule of the partial-BCE baseline (configs/baseline_coco.py):
ResNet-101 at 448 px, batch 8, Adam lr 1e-5 -> 1e-6 after epoch 9, 20 epochs. VOC 2007 and
VG-200 take the same method after a colon:
--config=configs/baseline_voc.py:ll_ct and --config=configs/baseline_vg.py:ll_ct.
Preparing DATA and the two files: docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "ll_ct"):
    return paper_config(method, "coco2014")
