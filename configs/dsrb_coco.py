"""DSRB, repaired (METHODS.md §9) on MS-COCO 2014 (C = 80) with the launch-script settings (METHODS.md Appendix A).

    python -m mlrpl_jax.main --config=configs/dsrb_coco.py --workdir=workdirs/dsrb_coco

ResNet-101 at 448 px, batch 8, Adam lr 1e-5 -> 1e-6 after epoch 9, 20 epochs; blending and
prototypes from epoch 5. For the papers' setting add the converted ImageNet backbone with
--config.model.pretrained=<resnet101 .npz>; change the known ratio with --config.known_ratio.
"""

from mlrpl_jax.config import paper_config


def get_config():
    return paper_config("dsrb", "coco2014")
