"""PyTorch reference side of the paper-configuration speed table (docs/performance.md).

    python benchmarks/reference_torch_step.py --model=sst --mode=train_step --steps=3
    python benchmarks/reference_torch_step.py --model=sarb --mode=eval_forward --steps=3
    python benchmarks/reference_torch_step.py --model=dsrb --image_size=64 --batch=2 --width=8 --steps=1 \
        --threads=1 --output=/tmp/smoke.jsonl   # smoke run

Times in PyTorch on the CPU (oneDNN convolutions, `--threads` intra-op threads) the computation
that benchmarks/train_step.py times in JAX: one training step, or the inference forward, of a
method at the paper configuration (ResNet-101, 448², batch 8, 80 classes), on a synthetic batch
(Gaussian images, partial labels with p = 0.5) and random weights. Run one process per line,
right after or before ours, so that both sides land in one table measured back to back. Prints
one JSON line and appends it to --output with the keys our side writes in `harness_fields`
(impl 'pytorch', model, mode, image_size, batch, threads, warmup, steps, median_s, times_s,
peak_rss_mb), plus torch_version, 'benchmark' and the fields of benchmarks/timing_harness.py
(AMX presence, the load average before and after).

Network (every model and mode; docs/methods/network.md §4):
* torchvision-layout ResNet-101 (Kaiming-normal fan-out weights, BN statistics 0 / 1). Stem and
  layer1-3 frozen (requires_grad False, BN on stored statistics), layer4 trained with batch-
  statistic BN (the reference's train/eval/train pattern, §4.1), then the extra 2x2/2 average pool.
* 1x1 reduction to 1024 + BN, semantic decoupling, GGNN (T = 3), output head, with random word
  embeddings (C, 300) and adjacency (C, C). The head is computed as our SharedHead computes it:
  the attention score in the re-associated form of §4.8.1 and S by one einsum (no 5-D map Φ);
  the GGNN's three message maps as one (2D -> 3D) linear and U_z, U_r as one (D -> 2D) linear
  (§4.8.4). Concatenated weights are elementwise the same parameters for Adam and weight decay.

Train step (`--mode=train_step`): forward, loss, backward, torch.optim.Adam (lr 1e-5, betas
(0.9, 0.999), eps 1e-8, weight_decay 5e-4 = the coupled L2 of docs/methods/training.md §10.1)
over every trainable parameter, zero_grad to zero tensors (PyTorch 1.7). The loss is that of
epoch 5, the first with every term on (our dry run's epoch; warm-up factor 1):
* sst (docs/methods/sst.md §6.5): the pair co-occurrence head (re-associated as ours, §4.8.3),
  the bank update (per-class prepend-and-truncate, 100 rows), intra and inter pseudo labels at
  margin 0.95, and BCE(z, t) + BCE(z, t_intra) + BCE(z, t_inter) + 10 L_cooc + 0.05 L_con.
* sarb (docs/methods/sarb.md §8.4): α, β clamped in place; the instance blend with the reversed
  batch and the prototype blend (one κ, one class per image, class 0 when none is unknown, as
  in the paper config) with a random (C, 10, D) prototype table; each blend through its own
  head call (GGNN + output head, as the reference runs them); BCE(z, t) + 0.05 L_con
  + BCE(z1, y1) + BCE(z2, y2).
* dsrb (docs/methods/dsrb.md §9.1): as sarb, but the prototype blend takes ψ (C, 4, D, random)
  of a random quadrant other than each entry's attention peak, for one unknown class per image.
Left out on both sides' step times: data loading and the prototype passes (host hooks, once
every 5 epochs). Left out here only, all small: our step's logged pseudo-label counts (reductions
over (B, C)), its gradient norm and non-finite guard (a pass over the gradients and a select over
the state) and the α, β projection after the update (done here as the reference's in-place clamp).

Inference forward (`--mode=eval_forward`): model.eval(), torch.no_grad(), images -> logits
through the backbone and the shared head; SST's pair head is not run (our jitted predict drops
it as dead code).

Not measured: the authors' own, un-re-associated head (the hidden linear on the (B, 49, C, 512)
gate tensor, the map Φ, the (B, P, 1024) x (1024, 1024) pair MLP); this harness compares the
frameworks on the same algebra, not the reference's algebra.

Run it on an otherwise idle machine and read the load averages: with --threads equal to the
cores and another job on one of them, PyTorch's OpenMP threads wait on each other and the step
time grows several-fold (tiny smoke runs: 0.1 s with 1 thread, 1.3-4.8 s with 2 threads on a
2-core machine at load 4).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable

import numpy as np
import timing_harness
import torch
import torch.nn.functional as F
from absl import app, flags
from torch import nn

MODELS = ("sst", "sarb", "dsrb")
MODES = ("train_step", "eval_forward")
RESNET101_BLOCKS = (3, 4, 23, 3)
FEATURE_DIM, ATTENTION_DIM, OUTPUT_DIM, WORD_DIM, GGNN_STEPS = 1024, 512, 1024, 300, 3
KNOWN_RATIO, POSITIVE_RATE = 0.5, 0.2  # paper config's p; the dry run's synthetic positive rate
ADAM = {"lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-4}
SST_BANK_SIZE, SST_MARGIN = 100, 0.95  # N_Q; both margins in epoch 5
SST_COOCCURRENCE_WEIGHT, CONTRASTIVE_WEIGHT = 10.0, 0.05
SARB_PROTOTYPES = 10  # K
NUM_QUADRANTS = 4
COSINE_EPS = 1e-9


# ---------------------------------------------------------------------------------------- network


class Bottleneck(nn.Module):
    """torchvision Bottleneck: 1x1, 3x3 with the stride, 1x1 to 4 planes; projection shortcut."""

    def __init__(self, in_channels: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or in_channels != 4 * planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, 4 * planes, 1, stride, bias=False),
                nn.BatchNorm2d(4 * planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut, inplace=True)


class ResNet101(nn.Module):
    """torchvision-layout ResNet-101 without pooling / fc, plus the extra 2x2/2 average pool.

    (B, 3, H, W) -> (B, 32 width, H/64, W/64); width 64 is ResNet-101 itself.
    """

    frozen_modules = ("conv1", "bn1", "layer1", "layer2", "layer3")

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = width
        for stage, num_blocks in enumerate(RESNET101_BLOCKS):
            planes = width * 2**stage
            blocks = []
            for i in range(num_blocks):
                blocks.append(Bottleneck(in_channels, planes, 2 if i == 0 and stage > 0 else 1))
                in_channels = 4 * planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.extra_pool = nn.AvgPool2d(2, 2)
        self.out_channels = in_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for name in self.frozen_modules:
            getattr(self, name).requires_grad_(False)

    def set_reference_train_mode(self) -> None:
        """Frozen part in inference mode (stored BN statistics), layer4 with batch statistics."""
        self.eval()
        self.layer4.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.extra_pool(self.layer4(x))


def element_wise_parameters(rows: int, features: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Per-row linear classifiers: weight (rows, features), bias (rows,), U(±1/sqrt(features))."""
    bound = 1 / math.sqrt(features)
    return (
        nn.Parameter(torch.empty(rows, features).uniform_(-bound, bound)),
        nn.Parameter(torch.empty(rows).uniform_(-bound, bound)),
    )


class SemanticDecoupling(nn.Module):
    """Category-specific attention (network.md §4.3) in the re-associated form of §4.8.1."""

    def __init__(self):
        super().__init__()
        self.feature_projection = nn.Linear(FEATURE_DIM, ATTENTION_DIM, bias=False)  # P1
        self.word_projection = nn.Linear(WORD_DIM, ATTENTION_DIM, bias=False)  # P2
        self.hidden = nn.Linear(ATTENTION_DIM, ATTENTION_DIM)  # W3, b3
        self.score = nn.Linear(ATTENTION_DIM, 1)  # w4, b4

    def forward(
        self, reduced: torch.Tensor, words: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """reduced (B, HW, D), words (C, D_w) -> attention (B, HW, C), semantic (B, C, D)."""
        score_weight = self.score.weight[0]  # w4 (D_a,)
        direction = self.hidden.weight.t() @ score_weight  # W3^T w4 (D_a,)
        offset = self.hidden.bias @ score_weight + self.score.bias[0]
        gated = torch.tanh(
            self.feature_projection(reduced)[:, :, None, :]
            * self.word_projection(words)[None, None]
        )  # (B, HW, C, D_a)
        attention = torch.softmax(gated @ direction + offset, dim=1)  # (B, HW, C)
        return attention, torch.einsum("bhc,bhd->bcd", attention, reduced)


class GatedGNN(nn.Module):
    """GGNN over the class graph (network.md §4.4), T steps with shared weights."""

    def __init__(self, adjacency: torch.Tensor):
        super().__init__()
        self.register_buffer("adjacency", adjacency)  # A (C, C)
        self.register_buffer("adjacency_t", adjacency.t().contiguous())  # A^T
        self.message = nn.Linear(
            2 * FEATURE_DIM, 3 * FEATURE_DIM
        )  # [W_z; W_r; W_h] with b_z, b_r, b_h
        self.state_gates = nn.Linear(FEATURE_DIM, 2 * FEATURE_DIM)  # [U_z; U_r] with c_z, c_r
        self.state_candidate = nn.Linear(FEATURE_DIM, FEATURE_DIM)  # U_h, c_h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Node states (B, C, D) -> (B, C, D)."""
        for _ in range(GGNN_STEPS):
            m = torch.cat(
                [self.adjacency @ h, self.adjacency_t @ h], dim=-1
            )  # (B, C, 2D), "in" first
            m_update, m_reset, m_candidate = self.message(m).chunk(3, dim=-1)
            h_update, h_reset = self.state_gates(h).chunk(2, dim=-1)
            z = torch.sigmoid(m_update + h_update)
            r = torch.sigmoid(m_reset + h_reset)
            candidate = torch.tanh(m_candidate + self.state_candidate(r * h))
            h = (1 - z) * h + z * candidate
        return h


class SharedNetwork(nn.Module):
    """Backbone -> reduction -> decoupling -> GGNN -> output head (network.md §4)."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.backbone = ResNet101(width)
        self.reduction_conv = nn.Conv2d(self.backbone.out_channels, FEATURE_DIM, 1, bias=False)
        self.reduction_bn = nn.BatchNorm2d(FEATURE_DIM)
        self.register_buffer("word_embeddings", torch.randn(num_classes, WORD_DIM))  # E (C, D_w)
        self.semantic_decoupling = SemanticDecoupling()
        self.ggnn = GatedGNN(torch.rand(num_classes, num_classes))
        self.fc = nn.Linear(2 * FEATURE_DIM, OUTPUT_DIM)
        self.classifier_weight, self.classifier_bias = element_wise_parameters(
            num_classes, OUTPUT_DIM
        )

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) -> reduced (B, HW, D), attention (B, HW, C), semantic (B, C, D)."""
        reduced = self.reduction_bn(self.reduction_conv(self.backbone(images)))  # (B, D, h, w)
        reduced = reduced.flatten(2).transpose(1, 2)  # (B, HW, D)
        attention, semantic = self.semantic_decoupling(reduced, self.word_embeddings)
        return reduced, attention, semantic

    def classify(self, semantic: torch.Tensor) -> torch.Tensor:
        """head(S): semantic (B, C, D) -> logits (B, C) through the GGNN and the output head."""
        hidden = torch.tanh(
            self.fc(torch.cat([self.ggnn(semantic), semantic], dim=-1))
        )  # (B, C, D_o)
        return (hidden * self.classifier_weight).sum(-1) + self.classifier_bias


class CooccurrenceHead(nn.Module):
    """SST's pair head (network.md §4.6) in the re-associated form of §4.8.3: (B, C, D) -> (B, P)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.class_projection = nn.Linear(FEATURE_DIM, ATTENTION_DIM)  # W1
        self.pair_hidden = nn.Linear(2 * ATTENTION_DIM, OUTPUT_DIM)  # W2 = [W2^L W2^R]
        self.pair_output = nn.Linear(OUTPUT_DIM, OUTPUT_DIM)  # W3'
        num_pairs = num_classes * (num_classes - 1) // 2
        self.pair_weight, self.pair_bias = element_wise_parameters(
            num_pairs, OUTPUT_DIM
        )  # nu, lambda
        first, second = torch.triu_indices(num_classes, num_classes, 1)  # Π_C order
        self.register_buffer("first", first)
        self.register_buffer("second", second)

    def forward(self, semantic: torch.Tensor) -> torch.Tensor:
        projected = self.class_projection(semantic)  # q (B, C, D_a)
        left = projected @ self.pair_hidden.weight[:, :ATTENTION_DIM].t()  # W2^L q (B, C, H)
        right = projected @ self.pair_hidden.weight[:, ATTENTION_DIM:].t()  # W2^R q (B, C, H)
        pair_hidden = F.relu(
            left[:, self.first] + right[:, self.second] + self.pair_hidden.bias
        )  # (B, P, H)
        folded_weight = self.pair_weight @ self.pair_output.weight  # W3'^T nu_k (P, H)
        folded_bias = self.pair_weight @ self.pair_output.bias + self.pair_bias  # (P,)
        return torch.einsum("bph,ph->bp", pair_hidden, folded_weight) + folded_bias


class ReferenceModel(nn.Module):
    """The shared network plus the method's extras: SST's pair head, or SARB/DSRB's α and β."""

    def __init__(self, model: str, num_classes: int, width: int):
        super().__init__()
        self.network = SharedNetwork(num_classes, width)
        if model == "sst":
            self.cooccurrence = CooccurrenceHead(num_classes)
        else:
            self.alpha = nn.Parameter(torch.tensor(0.5))
            self.beta = nn.Parameter(torch.tensor(0.5))

    def set_reference_train_mode(self) -> None:
        """Whole model in training mode, then the backbone's frozen part back in inference mode."""
        self.train()
        self.network.backbone.set_reference_train_mode()


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------- losses


def partial_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE over entries with targets > 0 or < 0 (soft targets allowed, losses.md §5.1); 0 if none."""
    positive, negative = targets > 0, targets < 0
    elementwise = torch.where(
        positive,
        (1 - targets) * logits + F.softplus(-logits),
        -(1 + targets) * logits + F.softplus(logits),
    )
    selected = positive | negative
    return torch.where(selected, elementwise, 0).sum() / selected.sum().clamp(min=1)


def cosine(a: torch.Tensor, b: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
    """cos_eps = a·b / sqrt(max(|a|²|b|², eps²)) (problem_and_data.md §0); a, b broadcast to dots."""
    return dots / torch.sqrt(torch.clamp((a * a).sum(-1) * (b * b).sum(-1), min=COSINE_EPS**2))


def pair_asymmetric_loss(
    pair_logits: torch.Tensor, targets: torch.Tensor, pairs: tuple
) -> torch.Tensor:
    """SST's asymmetric focal loss on pairs (losses.md §5.2): (B, P) logits, (B, C) labels."""
    first, second = pairs
    pair_targets = ((targets[:, first] == 1) & (targets[:, second] == 1)).float()  # Y (B, P)
    probability = torch.sigmoid(pair_logits)
    negative_probability = (1 - probability + 0.05).clamp(max=1)
    log_likelihood = pair_targets * torch.log(probability.clamp(min=1e-8)) + (
        1 - pair_targets
    ) * torch.log(negative_probability.clamp(min=1e-8))
    focus = 1 - (pair_targets * probability + (1 - pair_targets) * negative_probability)
    return -(log_likelihood * focus.pow(pair_targets + 2 * (1 - pair_targets))).mean()


def contrastive_loss(semantic: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-image contrastive loss (losses.md §5.3) with the reference's random sub-sampling."""
    first, second = torch.triu_indices(len(semantic), len(semantic), 1)  # Π_B
    a, b = semantic[first], semantic[second]  # (|Π_B|, C, D)
    cosines = cosine(a, b, (a * b).sum(-1))  # (|Π_B|, C)
    positive, negative = targets == 1, targets == -1
    both_positive = positive[first] & positive[second]
    mixed = (positive[first] & negative[second]) | (negative[first] & positive[second])
    both_negative = negative[first] & negative[second]
    terms = torch.where(both_positive, 1 - cosines, 1 + cosines)
    num_both_positive = int(both_positive.sum())
    weights = both_positive.flatten().float()
    for category in (mixed, both_negative):
        entries = category.flatten().nonzero().squeeze(1)
        if num_both_positive == 0:
            weights[entries] += 1
            continue
        randomly = entries[torch.randperm(len(entries))[: 2 * num_both_positive]]
        hardest_order = (
            terms.detach().flatten()[entries].topk(min(len(entries), num_both_positive)).indices
        )
        hardest = entries[hardest_order]
        weights.index_add_(
            0, torch.cat([randomly, hardest]), torch.ones(len(randomly) + len(hardest))
        )
    return (weights * terms.flatten()).sum() / weights.sum().clamp(min=1)


# ------------------------------------------------------------------------------ method losses


@torch.no_grad()
def update_bank(bank: torch.Tensor, semantic: torch.Tensor, targets: torch.Tensor) -> None:
    """Puts each class's known positives in front of its rows and cuts back to N_Q (sst.md §6.3)."""
    for c in range(bank.shape[0]):
        positives = semantic[targets[:, c] == 1, c]  # (n_c, D)
        if len(positives):
            bank[c] = torch.cat([positives, bank[c]])[: bank.shape[1]]


@torch.no_grad()
def sst_pseudo_labels(
    pair_logits: torch.Tensor,
    semantic: torch.Tensor,
    targets: torch.Tensor,
    bank: torch.Tensor,
    pairs: tuple,
) -> tuple[torch.Tensor, torch.Tensor]:
    """t_intra (sst.md §6.2) and t_inter (§6.3) at margin 0.95, both (B, C) constants."""
    batch, num_classes = targets.shape
    cooccurrence = torch.ones(batch, num_classes, num_classes)  # M (B, C, C), unit diagonal
    cooccurrence[:, pairs[0], pairs[1]] = cooccurrence[:, pairs[1], pairs[0]] = torch.sigmoid(
        pair_logits
    )
    known_positive = (targets == 1).float()
    intra_scores = torch.einsum("bij,bj->bi", cooccurrence, known_positive) / known_positive.sum(
        -1, keepdim=True
    ).clamp(min=1)
    dots = torch.einsum("bcd,cnd->bcn", semantic, bank)  # (B, C, N_Q)
    inter_scores = cosine(semantic[:, :, None], bank[None], dots).mean(-1)  # (B, C)
    unknown = targets == 0
    return (
        targets + (unknown & (intra_scores >= SST_MARGIN)).float(),
        targets + (unknown & (inter_scores >= SST_MARGIN)).float(),
    )


def sst_loss(
    model: ReferenceModel,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """sst.md §6.5 in epoch 5: three BCE terms + 10 L_cooc + 0.05 L_con, bank updated first."""
    _, _, semantic = model.network.extract(images)
    logits = model.network.classify(semantic)
    pair_logits = model.cooccurrence(semantic)
    pairs = (model.cooccurrence.first, model.cooccurrence.second)
    update_bank(state["bank"], semantic, targets)
    intra_targets, inter_targets = sst_pseudo_labels(
        pair_logits, semantic, targets, state["bank"], pairs
    )
    return (
        partial_bce(logits, targets)
        + partial_bce(logits, intra_targets)
        + partial_bce(logits, inter_targets)
        + SST_COOCCURRENCE_WEIGHT * pair_asymmetric_loss(pair_logits, targets, pairs)
        + CONTRASTIVE_WEIGHT * contrastive_loss(semantic, targets)
    )


def blend_towards(
    semantic: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor,
    mask: torch.Tensor,
    beta: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S2 = μ (β S + (1 - β) ψ) + (1 - μ) S and y2 = (1 - μ) t + μ (1 - β); μ = mask (B, C)."""
    weights = mask[..., None]  # (B, C, 1)
    blended = weights * (beta * semantic + (1 - beta) * prototypes) + (1 - weights) * semantic
    return blended, (1 - mask) * targets + mask * (1 - beta)


def sarb_prototype_blend(
    model: ReferenceModel,
    state: dict[str, torch.Tensor],
    semantic: torch.Tensor,
    targets: torch.Tensor,
    reduced: torch.Tensor,
    attention: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PLRB (sarb.md §8.3): one κ for the batch, one class per image (class 0 when none is unknown)."""
    del reduced, attention  # DSRB's peak quadrants need them
    prototypes = state["prototypes"][:, torch.randint(SARB_PROTOTYPES, ())]  # Π[:, κ] (C, D)
    chosen = torch.argmax(torch.rand(targets.shape) * (targets == 0), dim=1)  # (B,)
    mask = F.one_hot(chosen, targets.shape[1]).float()
    return blend_towards(semantic, targets, prototypes, mask, model.beta)


def dsrb_prototype_blend(
    model: ReferenceModel,
    state: dict[str, torch.Tensor],
    semantic: torch.Tensor,
    targets: torch.Tensor,
    reduced: torch.Tensor,
    attention: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPRB in vector form (dsrb.md §9.1-9.2): ψ of a non-peak quadrant, one unknown class per image.

    reduced (B, HW, D) and attention (B, HW, C) come from a square h x w grid.
    """
    height = width = math.isqrt(reduced.shape[1])
    with torch.no_grad():
        peak_map = (attention * reduced.sum(-1, keepdim=True)).view(
            len(attention), height, width, -1
        )
        row = peak_map.amax(dim=2).argmax(dim=1)  # (B, C)
        col = peak_map.amax(dim=1).argmax(dim=1)  # (B, C)
        peak = 2 * (row >= height // 2) + (col >= width // 2)
        other = (peak - torch.randint(1, NUM_QUADRANTS, peak.shape)) % NUM_QUADRANTS  # (B, C)
    classes = torch.arange(targets.shape[1])
    prototypes = state["prototypes"][classes, other]  # ψ_{c, q'} (B, C, D)
    unknown = (targets == 0).float()
    chosen = torch.argmax(torch.rand(targets.shape) * unknown, dim=1)
    mask = F.one_hot(chosen, targets.shape[1]).float() * unknown
    return blend_towards(semantic, targets, prototypes, mask, model.beta)


def blending_loss(
    model: ReferenceModel,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    prototype_blend: Callable,
) -> torch.Tensor:
    """sarb.md §8.4 / dsrb.md §9.1 in epoch 5: BCE + 0.05 L_con + the two blended branches' BCE."""
    with torch.no_grad():
        model.alpha.clamp_(0, 1)
        model.beta.clamp_(0, 1)
    reduced, attention, semantic = model.network.extract(images)
    logits = model.network.classify(semantic)
    partner_semantic, partner_targets = semantic.flip(0), targets.flip(0)  # b' = B - 1 - b
    mix = torch.where(
        (targets == 0) & (partner_targets == 1), model.alpha, torch.ones(())
    )  # Λ (B, C)
    instance_semantic = mix[..., None] * semantic + (1 - mix[..., None]) * partner_semantic
    instance_targets = mix * targets + (1 - mix) * partner_targets
    prototype_semantic, prototype_targets = prototype_blend(
        model, state, semantic, targets, reduced, attention
    )
    return (
        partial_bce(logits, targets)
        + CONTRASTIVE_WEIGHT * contrastive_loss(semantic, targets)
        + partial_bce(model.network.classify(instance_semantic), instance_targets)
        + partial_bce(model.network.classify(prototype_semantic), prototype_targets)
    )


# -------------------------------------------------------------------------------------- harness


def synthetic_batch(
    batch: int, image_size: int, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian images (B, 3, H, W), from NHWC like ours, and partial labels (B, C) in {-1, 0, 1}."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, image_size, image_size, 3), dtype=np.float32)
    complete = np.where(rng.random((batch, num_classes)) < POSITIVE_RATE, 1, -1)
    partial = complete * (rng.random((batch, num_classes)) < KNOWN_RATIO)
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(partial.astype(np.float32)),
    )


def method_state(model: str, num_classes: int) -> dict[str, torch.Tensor]:
    """SST's empty bank (C, N_Q, D), or a random prototype table: SARB (C, K, D), DSRB (C, 4, D)."""
    if model == "sst":
        return {"bank": torch.zeros(num_classes, SST_BANK_SIZE, FEATURE_DIM)}
    per_class = SARB_PROTOTYPES if model == "sarb" else NUM_QUADRANTS
    return {"prototypes": torch.randn(num_classes, per_class, FEATURE_DIM)}


def measure(
    model_name: str,
    mode: str,
    image_size: int,
    batch: int,
    num_classes: int,
    width: int,
    warmup: int,
    steps: int,
) -> list[float]:
    """Builds the model with random weights and times `steps` train steps or inference forwards."""
    torch.manual_seed(0)
    model = ReferenceModel(model_name, num_classes, width)
    images, targets = synthetic_batch(batch, image_size, num_classes)
    if mode == "eval_forward":
        model.eval()

        @torch.no_grad()
        def forward() -> None:
            model.network.classify(model.network.extract(images)[2])

        return timing_harness.timed_calls(forward, steps, warmup)

    model.set_reference_train_mode()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], **ADAM)
    state = method_state(model_name, num_classes)
    losses = []

    def train_step() -> None:
        if model_name == "sst":
            loss = sst_loss(model, state, images, targets)
        else:
            blend = sarb_prototype_blend if model_name == "sarb" else dsrb_prototype_blend
            loss = blending_loss(model, state, images, targets, blend)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        losses.append(loss.item())

    times = timing_harness.timed_calls(train_step, steps, warmup)
    if not all(math.isfinite(loss) for loss in losses):
        print(f"warning: non-finite loss in the timed steps: {losses}", file=sys.stderr)
    return times


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    if (
        args.image_size < 64
        or min(args.batch, args.num_classes, args.width, args.threads, args.steps) < 1
        or args.warmup < 0
    ):
        raise app.UsageError(
            "need image_size >= 64 (one cell after the stride-64 backbone), warmup >= 0 "
            "and the other sizes >= 1"
        )
    load_before = timing_harness.load_average()
    torch.set_num_threads(args.threads)
    times = measure(
        args.model,
        args.mode,
        args.image_size,
        args.batch,
        args.num_classes,
        args.width,
        args.warmup,
        args.steps,
    )
    times = [round(t, 4) for t in times]
    line = {
        "benchmark": "train_step",
        "impl": "pytorch",
        "model": args.model,
        "mode": args.mode,
        "image_size": args.image_size,
        "batch": args.batch,
        "threads": args.threads,
        "warmup": args.warmup,
        "steps": len(times),
        "median_s": round(statistics.median(times), 4),
        "times_s": times,
        "peak_rss_mb": round(timing_harness.peak_rss_mb(), 1),
        "torch_version": torch.__version__,
        **timing_harness.conditions(load_before),
    }
    print(timing_harness.append_line(args.output, line))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_enum("model", "sst", MODELS, "Method whose step is timed.")
    flags.DEFINE_enum("mode", "train_step", MODES, "The train step or only the inference forward.")
    flags.DEFINE_integer("image_size", 448, "Square image side.")
    flags.DEFINE_integer("batch", 8, "Images per step.")
    flags.DEFINE_integer("num_classes", 80, "Classes C (COCO: 80).")
    flags.DEFINE_integer("steps", 5, "Timed steps.")
    flags.DEFINE_integer("warmup", 1, "Untimed steps before them.")
    flags.DEFINE_integer(
        "width", 64, "ResNet base width (64: ResNet-101; smaller only for smoke runs)."
    )
    flags.DEFINE_integer("threads", timing_harness.cpu_threads(), "torch.set_num_threads.")
    flags.DEFINE_string(
        "output", timing_harness.results_path("train_step.jsonl"), "JSONL file to append to."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
