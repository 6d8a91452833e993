"""SATL (our design following the abstract of arXiv 2507.23263, docs/methods/satl.md §4) on Visual Genome VG-200 (200 classes).

    python -m mlrpl_jax.main --config=configs/satl_vg.py --workdir=workdirs/satl_vg \
        --config.data.data_dir=DATA --config.model.pretrained=resnet101.npz \
        --config.embeddings.path=vg_200_vector.npy
    python -m mlrpl_jax.main --config=configs/satl_vg.py --workdir=workdirs/satl_sst_vg \
        --config.satl.base_method=sst

The group's recipe (docs/methods/satl.md §3.2, §4.7): ResNet-101 at 448 px with stem..stage 3 frozen, Adam
lr 1e-5 (x0.1 after epoch 9), weight decay 5e-4, 20 epochs, batch 32 (§4.8), on top of the
partial-BCE baseline; the §4.8 design defaults (K = 100 bins, one-epoch histogram memory,
pseudo labels from epoch 5 with ρ+ = 0.9, ε- = 0.05, n_min = 20, λ_p = 1, λ_r = 0.1, m = 0.5, β
= 10). Set --config.known_ratio for the other label proportions. Preparing DATA and the two
files, and running another method with these settings (--config=configs/satl_vg.py:<method>):
docs/paper_datasets.md.
"""

from mlrpl_jax.config import paper_config


def get_config(method: str = "satl"):
    return paper_config(method, "vg200")
