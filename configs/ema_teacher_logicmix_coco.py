"""LogicMix with EMA-teacher pseudo labels (the published recipe's pseudo-labelling and mixing,
Pattern Recognition 2026) on partial BCE, on MS-COCO 2014 (C = 80) with the HCPLab launch-script
settings (docs/methods/ema.md §2.6, logicmix.md §4).

    python -m mlrpl_jax.main --config=configs/ema_teacher_logicmix_coco.py \
        --workdir=workdirs/ema_teacher_logicmix_coco \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=coco2014_glove300.npy

The settings of configs/ema_teacher_coco.py with the LogicMix authors' settings (half of the rows
of every batch mixed, 2 or 3 images each), the pseudo labels joining each image's labels before
the mix. Any method that takes LogicMix (logicmix.md §4) after a colon, e.g.
--config=configs/ema_teacher_logicmix_coco.py:sarb. VOC 2007 and VG-200:
--config=configs/baseline_voc.py:ema_teacher --config.logicmix.probability=0.5 (and likewise
baseline_vg.py). Preparing DATA and the two files: docs/paper_datasets.md.
"""

from mlrpl_jax.config import AUTHORS_LOGICMIX, paper_config


def get_config(method: str = "ema_teacher"):
    config = paper_config(method, "coco2014")
    config.logicmix.update(AUTHORS_LOGICMIX)
    return config
