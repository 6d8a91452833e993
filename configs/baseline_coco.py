"""Partial-BCE baseline on MS-COCO 2014 (C = 80) with the launch-script settings (docs/methods/hyperparameters.md, Appendix A).

    python -m mlrpl_jax.main --config=configs/baseline_coco.py --workdir=workdirs/baseline_coco \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=coco2014_glove300.npy

The row every method of the papers is compared with: the shared network trained on the known
labels only. ResNet-101 at 448 px, batch 8, Adam lr 1e-5 -> 1e-6 after epoch 9, 20 epochs.
Change the known ratio with --config.known_ratio. Preparing DATA and the two files, and running
another method with these settings (--config=configs/baseline_coco.py:<method>):
docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "baseline"):
    return paper_config(method, "coco2014")
