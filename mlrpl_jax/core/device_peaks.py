"""Peak FLOP/s per accelerator chip, the denominator of the model FLOPs utilisation (MFU).

Dense (no sparsity) vendor figures per chip, keyed by `jax.Device.device_kind`:

* Cloud TPU system architecture pages, bf16 per chip: v4 275 TFLOP/s
  (cloud.google.com/tpu/docs/v4), v5e 197 (cloud.google.com/tpu/docs/v5e), v5p 459
  (cloud.google.com/tpu/docs/v5p), v6e Trillium 918 (cloud.google.com/tpu/docs/v6e). Google
  publishes no float32 figure for them.
* NVIDIA data sheets (nvidia.com/en-us/data-center/a100, .../h100, .../h200), tensor-core
  figures without sparsity (the sheets print twice these "with sparsity"): A100 (SXM4 and PCIe)
  bf16 312, tf32 156, fp32 (no tensor cores) 19.5; H100 SXM bf16 989, tf32 494.5, fp32 67;
  H100 PCIe bf16 756, tf32 378, fp32 51; H200 SXM as H100 SXM.

Which peak a config is held to depends on its compute dtype (`config.model.dtype`): bfloat16
runs at the bf16 peak; float32 runs at JAX's default precision (jax.lax.Precision.DEFAULT),
which computes float32 dots and convolutions in one bfloat16 pass on TPUs and in tf32 on
A100/H100/H200, so those are its peaks. Other kinds (CPU, other GPUs) have no peak here.
"""

from __future__ import annotations

import dataclasses

TERA = 1e12


@dataclasses.dataclass(frozen=True)
class ChipPeak:
    """Dense peak FLOP/s of one chip; None where the vendor publishes none."""

    name: str
    bf16: float
    tf32: float | None = None  # tensor cores (GPUs only)
    fp32: float | None = None  # without tensor cores (GPUs only)

    def for_dtype(self, dtype: str) -> tuple[float, str]:
        """(peak FLOP/s, which figure) for a model computing in `dtype` at default precision."""
        if dtype == "bfloat16":
            return self.bf16, f"{self.name} bf16"
        if dtype != "float32":
            raise ValueError(f"no peak for compute dtype {dtype!r}; expected float32 or bfloat16")
        if self.tf32 is not None:
            return self.tf32, f"{self.name} tf32 (float32 dots at default precision)"
        return self.bf16, f"{self.name} bf16 (float32 dots at default precision: one bf16 pass)"


_TPU_V4 = ChipPeak("TPU v4", bf16=275 * TERA)
_TPU_V5E = ChipPeak("TPU v5e", bf16=197 * TERA)
_TPU_V5P = ChipPeak("TPU v5p", bf16=459 * TERA)
_TPU_V6E = ChipPeak("TPU v6e", bf16=918 * TERA)
_A100 = ChipPeak("A100", bf16=312 * TERA, tf32=156 * TERA, fp32=19.5 * TERA)
_H100_SXM = ChipPeak("H100 SXM", bf16=989 * TERA, tf32=494.5 * TERA, fp32=67 * TERA)
_H100_PCIE = ChipPeak("H100 PCIe", bf16=756 * TERA, tf32=378 * TERA, fp32=51 * TERA)
_H200_SXM = ChipPeak("H200 SXM", bf16=989 * TERA, tf32=494.5 * TERA, fp32=67 * TERA)

PEAKS: dict[str, ChipPeak] = {
    "TPU v4": _TPU_V4,
    "TPU v5 lite": _TPU_V5E,
    "TPU v5e": _TPU_V5E,
    "TPU v5": _TPU_V5P,
    "TPU v5p": _TPU_V5P,
    "TPU v6 lite": _TPU_V6E,
    "TPU v6e": _TPU_V6E,
    "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA H100 80GB HBM3": _H100_SXM,
    "NVIDIA H100 PCIe": _H100_PCIE,
    "NVIDIA H200": _H200_SXM,
}
