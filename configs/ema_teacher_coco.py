"""EMA-teacher curriculum pseudo labels (LogicMix's 2WayAug-PL, Pattern Recognition 2026) on
partial BCE, on MS-COCO 2014 (C = 80) with the HCPLab launch-script settings
(docs/methods/ema.md §2).

    python -m mlrpl_jax.main --config=configs/ema_teacher_coco.py \
        --workdir=workdirs/ema_teacher_coco \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=coco2014_glove300.npy

The shared network and schedule of the partial-BCE baseline (configs/baseline_coco.py):
ResNet-101 at 448 px, batch 8, Adam lr 1e-5 -> 1e-6 after epoch 9, 20 epochs; the published
recipe's model EMA (decay 0.999 per step, evaluated in place of the trained weights) and
thresholds (logits -4 and 4); pseudo labels from epoch 7 (the published 20 of 60 epochs in
proportion). VOC 2007 and VG-200 take the same method after a colon:
--config=configs/baseline_voc.py:ema_teacher and --config=configs/baseline_vg.py:ema_teacher.
Preparing DATA and the two files: docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "ema_teacher"):
    return paper_config(method, "coco2014")
