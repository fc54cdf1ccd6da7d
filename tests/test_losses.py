"""The attack losses (robustrank.attacks.losses) against their definitions, written out per
input here: margin, DLR and targeted DLR (Croce & Hein, ICML 2020, Eqs. 5 and 7), the
target classes of APGD-T and FAB-T."""

from __future__ import annotations

import pytest
import torch

from robustrank.attacks.losses import dlr_loss, dlr_targeted_loss, margin, target_classes


def test_dlr_losses_against_their_definitions():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (64,), generator=g)
    t = (y + 1 + torch.randint(0, 9, (64,), generator=g)) % 10
    for i in range(64):
        s = sorted(z[i].tolist(), reverse=True)
        others = max(v for j, v in enumerate(z[i].tolist()) if j != int(y[i]))
        want = -(z[i, y[i]].item() - others) / (s[0] - s[2] + 1e-12)
        assert dlr_loss(z, y)[i].item() == pytest.approx(want, rel=1e-12)
        want_t = -(z[i, y[i]].item() - z[i, t[i]].item()) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12)
        assert dlr_targeted_loss(z, y, t)[i].item() == pytest.approx(want_t, rel=1e-12)
        assert margin(z, y)[i].item() == pytest.approx(z[i, y[i]].item() - others, rel=1e-12)
    # invariant to shifting and positive scaling of the logits
    assert torch.allclose(dlr_loss(3 * z + 7, y), dlr_loss(z, y))
    order = z.argsort(1, descending=True)
    assert torch.equal(target_classes(z, 9), order[:, 1:10])
    assert target_classes(z[:, :4], 9).shape == (64, 3)
    with pytest.raises(ValueError, match="needs at least 4 classes"):
        dlr_targeted_loss(z[:, :3], y % 3, t % 3)
