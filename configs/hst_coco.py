"""HST on MS-COCO 2014 (80 classes) with the reference launch script's settings (docs/methods/hst.md §7, App. A).

    python -m mlrpl_jax.main --config=configs/hst_coco.py --workdir=workdirs/hst_coco \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=coco2014_glove300.npy

ResNet-101 at 448 px with stem..stage 3 frozen, Adam lr 1e-5 (x0.1 after epoch 9), weight decay
5e-4, batch 32, 20 epochs; pseudo labels and learnable margins (start 1.0) from epoch 5, K = 10
K-means prototypes per class at epochs 5, 10, 15; weights 0.1 (score BCEs), 10 (co-occurrence),
0.05 (instance contrastive), 0.05 (prototype). Every test image is evaluated;
--config.eval.drop_last=True reproduces the reference's dropped test tail. Preparing DATA and
the two files, and running another method with these settings
(--config=configs/hst_coco.py:<method>): docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "hst"):
    return paper_config(method, "coco2014")
