"""Low-precision search for the attacks: :class:`Precision` and the :class:`Autocast` wrapper.

An ensemble such as :class:`~robustrank.attacks.AutoAttack` may *search* for adversarial
examples in bfloat16 (``precision="bfloat16"``: the model evaluated under
``torch.autocast``, where oneDNN runs convolutions and matrix products on the CPU's
AVX-512 BF16/AMX units) and *count* only what float32 confirms: an input is broken when
the float32 model misclassifies the example the search found. Robust accuracy is then
always a float32 number; a weaker low-precision search can only leave more inputs robust,
which the benchmark's strength bound (robust accuracy within 0.3 points of the reference)
checks.

``precision="auto"`` searches in bfloat16 only where the device computes it natively (a CUDA
GPU with bfloat16, a CPU whose oneDNN has a bfloat16 path: AVX-512 or AMX) and in float32
elsewhere: on a CPU with AVX2 only, PyTorch emulates bfloat16 arithmetic and the search would
be several times slower than float32's. The attack's ``params()`` record the precision used.
"""

from __future__ import annotations

import warnings
from enum import StrEnum

import torch
from torch import Tensor, nn

__all__ = ["Precision", "Autocast", "check_precision", "native_bfloat16", "resolve_precision"]


class Precision(StrEnum):
    """The dtype an attack searches in (``float32``: the model as it is)."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    auto = "auto"

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype (of a resolved precision: not ``auto``)."""
        if self is Precision.auto:
            raise ValueError("precision auto has no dtype: resolve_precision(precision, device)")
        return getattr(torch, self.value)


def check_precision(value: str | Precision) -> Precision:
    """``value`` as a :class:`Precision`, or a ValueError naming the choices."""
    try:
        return Precision(value)
    except ValueError:
        choices = ", ".join(p.value for p in Precision)
        raise ValueError(f"precision must be one of {choices}, got {value!r}") from None


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: ``torch.cuda.is_bf16_supported()`` on
    CUDA; on the CPU, whether PyTorch's oneDNN reports a bfloat16 path (AVX-512 or AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else False


def resolve_precision(value: str | Precision, device: torch.device) -> Precision:
    """The precision to search in on ``device``: ``auto`` becomes bfloat16 where
    :func:`native_bfloat16`, else float32; an explicit bfloat16 on a device that only emulates
    it is kept, with a warning that it is slow there."""
    precision = check_precision(value)
    native = precision is not Precision.float32 and native_bfloat16(device)
    if precision is Precision.auto:
        return Precision.bfloat16 if native else Precision.float32
    if precision is Precision.bfloat16 and not native:
        warnings.warn(
            f"precision bfloat16 on {device.type}: this device has no native bfloat16 "
            "(on a CPU, AVX-512 or AMX), so PyTorch emulates it and the search is slower than "
            "in float32; use precision auto or float32",
            stacklevel=3,
        )
    return precision


class Autocast(nn.Module):
    """``model`` evaluated under ``torch.autocast(device, dtype)``; logits come out as
    float32. Parameters stay the model's own (float32): autocast casts them per operation,
    and input gradients flow through as usual.

    Example::

        >>> search = Autocast(model, torch.bfloat16)
        >>> x_adv = APGD(search, eps=0.05)(x, y)   # then confirm with model(x_adv)
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            logits = self.model(x)
        return logits.float()
