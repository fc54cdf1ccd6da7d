"""The linear relaxations on their own: every line bounds its function on a fine grid of
its interval (all of CROWN's cases for tanh and sigmoid, incl. tiny and huge intervals),
max pooling is bounded at sampled points, composing a max pool with the activation in
front equals the two steps, and bounds on windows equal the dense backward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustrank.evaluation.certification import Box, build_graph, certify, input_box
from robustrank.evaluation.certification.crown import crown_relaxations
from robustrank.evaluation.certification.relaxations import (
    SIGMOID,
    TANH,
    maxpool_relaxation,
    relu_relaxation,
    s_shaped_relaxation,
)
from robustrank.evaluation.certification.windows import group_neurons, window_path


def _intervals() -> Box:
    """Intervals of every kind: convex side, concave side, crossing 0 (narrow, wide,
    lopsided), tiny, degenerate, huge."""
    torch.manual_seed(20)
    lo = torch.cat(
        [torch.randn(200) * 3, torch.tensor([-5.0, 0.0, -1e-7, 2.0, -20.0, -0.01, -3.0])]
    )
    width = torch.cat([torch.rand(200) * 6, torch.tensor([4.0, 3.0, 2e-7, 0.0, 40.0, 10.0, 3.0])])
    return Box(lo, lo + width)


def _grid(box: Box, points: int = 2001) -> torch.Tensor:
    t = torch.linspace(0, 1, points).unsqueeze(1)
    return box.lo + (box.hi - box.lo) * t  # (points, n)


@pytest.mark.parametrize(("shape", "fn"), [(TANH, torch.tanh), (SIGMOID, torch.sigmoid)])
def test_tanh_and_sigmoid_lines_bound_the_function_on_the_interval(shape, fn):
    box = _intervals()
    r = s_shaped_relaxation(shape, box)
    z = _grid(box).double()
    f = fn(z)
    lower = r.lower_slope.double() * z + r.lower_bias.double()
    upper = r.upper_slope.double() * z + r.upper_bias.double()
    assert (lower <= f + 1e-6).all()
    assert (upper >= f - 1e-6).all()
    # not trivially loose: each line touches the function somewhere on a non-tiny interval
    wide = (box.hi - box.lo) > 1e-3
    assert ((f - lower).min(0).values[wide] < 1e-3).all()
    assert ((upper - f).min(0).values[wide] < 1e-3).all()


def test_relu_lines_are_crowns_choice_and_bound_relu():
    box = _intervals()
    r = relu_relaxation(box)
    z = _grid(box)
    lower = r.lower_slope * z
    upper = r.upper_slope * z + r.upper_bias
    assert (lower <= z.relu() + 1e-6).all() and (upper >= z.relu() - 1e-6).all()
    crossing = (box.lo < 0) & (box.hi > 0)
    chord = box.hi / (box.hi - box.lo)
    torch.testing.assert_close(r.upper_slope[crossing], chord[crossing])
    expected = (box.hi >= -box.lo).float()  # adaptive lower slope (CROWN-Ada)
    torch.testing.assert_close(r.lower_slope[crossing], expected[crossing])
    assert (r.lower_slope[box.lo >= 0] == 1).all() and (r.upper_slope[box.hi <= 0] == 0).all()


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "ceil"), [(2, 2, 0, False), (3, 2, 1, True), (3, 1, 1, False)]
)
def test_maxpool_relaxation_bounds_the_max_at_sampled_points(kernel, stride, padding, ceil):
    torch.manual_seed(21)
    lo = torch.randn(3, 2, 7, 7)
    box = Box(lo, lo + torch.rand_like(lo) * torch.rand(3, 2, 1, 1) * 2)
    out = F.max_pool2d(lo, kernel, stride, padding, ceil_mode=ceil).shape[-2:]
    r = maxpool_relaxation(box, (kernel,) * 2, (stride,) * 2, (padding,) * 2, (1, 1), out)
    for _ in range(200):
        z = box.lo + (box.hi - box.lo) * torch.rand_like(lo)
        m = F.max_pool2d(z, kernel, stride, padding, ceil_mode=ceil)
        chosen = z.flatten(2).gather(2, r.index.flatten(2)).view_as(m)
        assert (r.lower_slope * chosen <= m + 1e-6).all()
        assert (r.upper_slope * chosen + r.upper_bias >= m - 1e-6).all()
    dominated = r.upper_slope == 1  # then the max is the chosen input exactly
    assert dominated.any() and (~dominated).any()


def test_a_pool_relaxed_with_its_activation_equals_the_two_steps():
    torch.manual_seed(22)
    lo = torch.randn(2, 3, 6, 6)
    pre = Box(lo, lo + torch.rand_like(lo))
    act = s_shaped_relaxation(TANH, pre)
    post = Box(torch.tanh(pre.lo), torch.tanh(pre.hi))
    pool = maxpool_relaxation(post, (2, 2), (2, 2), (0, 0), (1, 1), (3, 3))
    a = torch.randn(2, 5, 3, 3, 3)
    mid, bias1 = pool.backward(a)
    two_steps, bias2 = act.backward(mid)
    fused, bias = pool.after(act).backward(a)
    torch.testing.assert_close(fused, two_steps)
    torch.testing.assert_close(bias, bias1 + bias2)


class _Strided(nn.Module):
    """Strided, padded and 'same' convolutions, overlapping and ceil-mode pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, stride=2, padding=2)
        self.c2 = nn.Conv2d(3, 2, 2, padding="same")
        self.fc = nn.Linear(2 * 3 * 3, 3)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.c1(x)), 3, stride=2, padding=1, ceil_mode=True)
        h = F.max_pool2d(torch.tanh(self.c2(h)), 2, padding=1)
        return self.fc(h.flatten(1))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("unstable_only", [True, False])
def test_window_bounds_equal_dense_bounds(unstable_only):
    torch.manual_seed(23)
    model = _Strided().eval()
    x = torch.rand(3, 1, 16, 16)
    y = model(x).argmax(1)
    graph = build_graph(model, (1, 16, 16))
    _, relaxations = crown_relaxations(graph, input_box(x, 0.05), refine=False)
    conv2 = next(i for i, n in enumerate(graph.nodes) if n.name == "c2")
    assert window_path(graph, conv2, relaxations) is not None  # the windows are used
    options = {"unstable_only": unstable_only}
    windowed = certify(model, x, y, 0.05, "crown", **options).margins
    dense = certify(model, x, y, 0.05, "crown", windows=False, **options).margins
    torch.testing.assert_close(windowed, dense, atol=1e-5, rtol=1e-5)


def test_group_neurons_places_every_neuron_once():
    torch.manual_seed(24)
    shape = (5, 4, 6)
    plane = shape[1] * shape[2]
    neurons = torch.stack([torch.randperm(5 * plane)[:37] for _ in range(3)])
    groups = group_neurons(neurons, plane)
    bsz, count, k = groups.channel.shape
    assert bsz * count * k <= 1.25 * neurons.numel()  # the memory bound
    ex = torch.arange(bsz).unsqueeze(1)
    placed = groups.channel[ex, groups.group, groups.slot] * plane + groups.place[ex, groups.group]
    assert torch.equal(placed, neurons)
    cells = groups.group * k + groups.slot
    assert all(len(set(row.tolist())) == neurons.shape[1] for row in cells)  # one per slot


class _PaperLike(nn.Module):
    """The paper's CNN, smaller: 'same' convolutions, ReLU, 2x2 max pools, tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 10, 3, padding=1)
        self.c2 = nn.Conv2d(10, 6, 3, padding=1)
        self.fc1 = nn.Linear(6 * 3 * 3, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.c1(x)), 2)
        h = F.max_pool2d(torch.relu(self.c2(h)), 2)
        return self.fc2(torch.tanh(self.fc1(h.flatten(1))))


@pytest.mark.parametrize("max_elements", [1 << 25, 3000])
def test_window_bounds_equal_dense_bounds_on_tiled_pools(max_elements):
    torch.manual_seed(25)
    model = _PaperLike().eval()
    x = torch.rand(4, 1, 12, 12)
    y = model(x).argmax(1)
    options = {"max_elements": max_elements}
    windowed = certify(model, x, y, 0.03, "crown", **options).margins
    dense = certify(model, x, y, 0.03, "crown", windows=False, **options).margins
    torch.testing.assert_close(windowed, dense, atol=1e-5, rtol=1e-5)
