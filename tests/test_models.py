"""Paper models (Section 5), the registry, weight matrices (Appendix B) and checkpoints."""

import json
import struct

import pytest
import torch
from torch import nn

from robustrank.models import (
    CheckpointError,
    as_matrix,
    create_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
    weight_matrices,
)


def test_registry():
    assert {"fcnn", "cnn"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'resnet'; choose one of: fcnn, cnn"):
        create_model("resnet")
    with pytest.raises(ValueError, match="bad options for model 'fcnn'"):
        create_model("fcnn", nonsense=3)


def test_fcnn_architecture():
    model = create_model("fcnn")
    shapes = [tuple(w.shape) for w in weight_matrices(model).values()]
    assert shapes == [(20, 784)] + [(20, 20)] * 4 + [(10, 20)]
    x = torch.rand(8, 1, 28, 28)
    out = model(x)
    assert out.shape == (8, 10)
    acts = model.activations(x)
    assert len(acts) == 6
    assert all(a.shape == (8, 20) for a in acts[:5])
    # tanh hidden units, raw logits out (no softmax)
    assert all(a.abs().max() < 1 for a in acts[:5])
    assert torch.allclose(acts[-1], out)
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))


def test_fcnn_forward_matches_manual_computation():
    model = create_model("fcnn", depth=2, width=5)
    x = torch.rand(3, 1, 28, 28)
    t = x.flatten(1)
    for layer in model.hidden:
        t = torch.tanh(t @ layer.weight.T + layer.bias)
    expected = t @ model.out.weight.T + model.out.bias
    assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("padding, fc_in", [("same", 32 * 7 * 7), ("valid", 32 * 5 * 5)])
def test_cnn_architecture(padding, fc_in):
    model = create_model("cnn", padding=padding)
    mats = weight_matrices(model)
    assert list(mats) == ["conv1", "conv2", "fc1", "out"]  # module paths, forward order
    assert all(mats[f"W{i}"] is mats[p] for i, p in enumerate(mats, 1))  # paper aliases
    assert tuple(mats["W1"].shape) == (32, 9)
    assert tuple(mats["W2"].shape) == (32, 288)
    assert tuple(mats["W3"].shape) == (128, fc_in)
    assert tuple(mats["W4"].shape) == (10, 128)
    x = torch.rand(4, 1, 28, 28)
    assert model(x).shape == (4, 10)
    assert [tuple(a.shape[1:]) for a in model.activations(x)][2:] == [(128,), (10,)]


def _cnn_as_written(model, x):
    """The CNN's forward in the paper's order (activation, then pool), in the test."""
    t = model.pool(model.conv_act(model.conv1(model.normalize(x))))
    t = model.pool(model.conv_act(model.conv2(t)))
    return model.out(model.fc_act(model.fc1(t.flatten(1))))


def _outputs_and_gradients(model, forward, x):
    model.zero_grad()
    xa = x.clone().requires_grad_(True)
    logits = forward(xa)
    # a loss that weighs the logits unequally, so every gradient path is exercised
    (logits * torch.arange(1.0, 11.0)).sum().backward()
    return [logits.detach(), xa.grad, *(p.grad.clone() for p in model.parameters())]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_cnn_pooling_before_relu_gives_the_same_numbers_and_gradients(layout, dtype):
    torch.manual_seed(0)
    model = create_model("cnn", mean=0.3, std=0.4).to(memory_format=layout)
    x = torch.rand(16, 1, 28, 28).contiguous(memory_format=layout)
    x[:4] = 0.0  # constant inputs: pooling windows whose values are all equal (ties)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        fast = _outputs_and_gradients(model, model, x)
        written = _outputs_and_gradients(model, lambda v: _cnn_as_written(model, v), x)
    assert all(torch.equal(a, b) for a, b in zip(fast, written))
    # the certifiers' torch.fx graph keeps the written order: ReLU, then the pool
    graph = torch.fx.symbolic_trace(model).graph
    ops = [n.target for n in graph.nodes if n.target in ("conv_act", "pool")]
    assert ops == ["conv_act", "pool", "conv_act", "pool"]


def test_weight_matrices_are_views_with_gradients():
    model = create_model("cnn")
    w2 = weight_matrices(model)["W2"]
    assert w2.data_ptr() == model.conv2.weight.data_ptr()
    w2.sum().backward()
    assert model.conv2.weight.grad is not None
    # Appendix B reshape: row o is the flattened (in, kh, kw) kernel of filter o
    assert torch.equal(w2[5], model.conv2.weight[5].flatten())


def test_as_matrix_shapes():
    # Conv1d (out, in, k) and Conv3d (out, in, kd, kh, kw) kernels reshape like Conv2d's.
    assert tuple(as_matrix(torch.ones(4, 2, 3)).shape) == (4, 6)
    assert tuple(as_matrix(torch.ones(4, 2, 3, 3, 3)).shape) == (4, 54)
    for bad in (torch.ones(3), torch.ones(2, 2, 2, 2, 2, 2)):
        with pytest.raises(ValueError, match="conv kernel"):
            as_matrix(bad)


def test_wrong_input_shape_is_explained():
    model = create_model("cnn")
    with pytest.raises(ValueError, match=r"N x 1 x 28 x 28.*unsqueeze"):
        model(torch.rand(4, 28, 28))


def test_normalisation_inside_model():
    a = create_model("fcnn", mean=0.5, std=0.25)
    b = create_model("fcnn")
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(a(x), b((x - 0.5) / 0.25), atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    model = create_model("cnn", padding="valid", conv_activation="tanh")
    path = save_checkpoint(model, tmp_path / "m.safetensors", dataset="fashion-mnist", epoch=3)
    loaded, meta = load_checkpoint(path)
    assert meta == {"dataset": "fashion-mnist", "epoch": 3}
    assert not loaded.training
    assert loaded.conv1.padding == (0, 0)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    # nothing but the final file is left behind (atomic write through a temp file)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_tampered_weights_are_refused(tmp_path):
    path = save_checkpoint(create_model("fcnn"), tmp_path / "m.safetensors")
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside the last tensor's payload
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(create_model("fcnn"), tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_mismatched_architecture_is_refused(tmp_path):
    path = save_checkpoint(create_model("fcnn"), tmp_path / "m.safetensors")

    def lie(header):
        meta = json.loads(header["__metadata__"]["robustrank"])
        meta["architecture"] = {"name": "fcnn", "options": {"width": 30}}
        header["__metadata__"]["robustrank"] = json.dumps(meta)

    _rewrite_header(path, lie)
    with pytest.raises(CheckpointError, match="do not match architecture"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="no robustrank metadata"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_model_not_from_registry_round_trips_into_a_given_model(tmp_path):
    path = save_checkpoint(nn.Linear(2, 2), tmp_path / "x.safetensors", note="plain module")
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.linear:Linear.*model=\.\.\."):
        load_checkpoint(path)
    target = nn.Linear(2, 2)
    loaded, meta = load_checkpoint(path, model=target)
    assert loaded is target and meta == {"note": "plain module"}
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path, model=nn.Linear(2, 3))


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_checkpoint(create_model("fcnn"), tmp_path / "x.safetensors", bad=object())
    assert not any(tmp_path.iterdir())


def test_fast_layout_keeps_values_outputs_and_checkpoints(tmp_path):
    from robustrank.models import use_fast_layout

    torch.manual_seed(0)
    model = create_model("cnn").eval()
    x = torch.rand(8, 1, 28, 28)
    ref_state = {k: v.clone() for k, v in model.state_dict().items()}
    ref_out = model(x)
    use_fast_layout(model, "cpu")
    assert model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.conv2.weight.is_contiguous()
    torch.testing.assert_close(model(x), ref_out, rtol=1e-5, atol=1e-5)
    path = save_checkpoint(model, tmp_path / "cl.safetensors")
    loaded, _ = load_checkpoint(path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref_state[k])
    fcnn = create_model("fcnn")
    strides = [p.stride() for p in fcnn.parameters()]
    assert [p.stride() for p in use_fast_layout(fcnn).parameters()] == strides
