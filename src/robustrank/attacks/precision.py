"""Low-precision search for the attacks: :class:`Precision` and the :class:`Autocast` wrapper.

An ensemble such as :class:`~robustrank.attacks.AutoAttack` may *search* for adversarial
examples in bfloat16 (``precision="bfloat16"``: the model evaluated under
``torch.autocast``, where oneDNN runs convolutions and matrix products on the CPU's
AVX-512 BF16/AMX units) and *count* only what float32 confirms: an input is broken when
the float32 model misclassifies the example the search found. Robust accuracy is then
always a float32 number; a weaker low-precision search can only leave more inputs robust,
which the benchmark's strength bound (robust accuracy within 0.3 points of the reference)
checks.
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import Tensor, nn

__all__ = ["Precision", "Autocast", "check_precision"]


class Precision(StrEnum):
    """The dtype an attack searches in (``float32``: the model as it is)."""

    float32 = "float32"
    bfloat16 = "bfloat16"

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype."""
        return getattr(torch, self.value)


def check_precision(value: str | Precision) -> Precision:
    """``value`` as a :class:`Precision`, or a ValueError naming the choices."""
    try:
        return Precision(value)
    except ValueError:
        choices = ", ".join(p.value for p in Precision)
        raise ValueError(f"precision must be one of {choices}, got {value!r}") from None


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
