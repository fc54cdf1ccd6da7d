"""Your own model, data and training loop: a residual network with BatchNorm on a synthetic
CIFAR-10-shaped npz dataset, trained from YAML (by import path, with --trust-code) and in a
hand-written loop with Regularizer and StructureTracker; layer order, names and keys."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from typer.testing import CliRunner

import robustrank as rr
from robustrank.cli import app
from robustrank.information import named_layer_activations
from robustrank.models import (
    CheckpointError,
    LayerOrderUnknown,
    create_model,
    load_checkpoint,
    named_weight_layers,
    register_model,
    weight_matrices,
)
from robustrank.regularizers import joint_l1_penalty, l1_penalty
from robustrank.training import read_history, train

runner = CliRunner()

MODEL_SOURCE = '''
import torch
from torch import nn
import torch.nn.functional as F

IMPORTED = []


class TinyResNet(nn.Module):
    """conv stem, one residual block with BatchNorm, global pooling, linear head."""

    def __init__(self, width: int = 4, num_classes: int = 3) -> None:
        super().__init__()
        IMPORTED.append(width)
        self.fc = nn.Linear(width, num_classes)  # registered first, called last
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.block = nn.Module()
        self.block.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.block.bn1 = nn.BatchNorm2d(width)
        self.block.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.block.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        h = F.relu(self.stem(x))
        r = F.relu(self.block.bn1(self.block.conv1(h)))
        h = F.relu(h + self.block.bn2(self.block.conv2(r)))
        return self.fc(h.mean(dim=(2, 3)))
'''
FORWARD_ORDER = ["stem", "block.conv1", "block.conv2", "fc"]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A directory holding the user's model module (imported from the working directory)
    and a synthetic 3 x 32 x 32 npz dataset; the test runs inside it."""
    module = f"user_resnet_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(MODEL_SOURCE)
    write_npz(tmp_path / "data.npz", seed=0)
    monkeypatch.chdir(tmp_path)
    yield tmp_path, module
    sys.modules.pop(module, None)


def write_npz(path, seed: int, n_train: int = 96, n_test: int = 48) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 255, size=(3, 3, 1, 1))

    def split(n):
        y = rng.integers(0, 3, size=n)
        x = 0.5 * centres[y] + 0.5 * rng.uniform(0, 255, size=(n, 3, 32, 32))
        return x.astype(np.uint8), y

    (xa, ya), (xb, yb) = split(n_train), split(n_test)
    np.savez(path, x_train=xa, y_train=ya, x_test=xb, y_test=yb)


def user_config(module: str, **overrides) -> dict:
    data = {
        "name": "user-resnet",
        "model": {"name": f"{module}:TinyResNet", "options": {"width": 4}},
        "dataset": {"name": "npz", "path": "data.npz"},
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.05,
        "momentum": 0.9,
        "regularizers": {"l1": {"block.conv1": 0.01, "stem": 0.001}, "nuclear": {"fc": 0.01}},
        "history": {
            "eval_n": 24,
            "attacks": ["fgsm", "pgd"],
            "attack_options": {"pgd": {"steps": 3}},
            "track_mi": True,
            "mi_n": 32,
        },
    }
    data.update(overrides)
    return data


def write_config(path, data) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.slow
def test_user_model_trains_from_yaml_resumes_and_refuses_changed_data(workdir):
    root, module = workdir
    write_config(root / "cfg.yaml", user_config(module))
    args = ["train", "cfg.yaml", "--out", "run", "--no-progress"]

    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--trust-code" in refused.output
    assert module not in sys.modules  # nothing was imported

    # interrupted after the first epoch's row, then resumed from the CLI
    cfg = rr.training.load_config("cfg.yaml", trust_code=True)

    def stop(row, _model):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, "run", progress=False, callback=stop, trust_code=True)
    done = runner.invoke(app, [*args, "--resume", "--trust-code"])
    assert done.exit_code == 0, done.output
    straight = train(cfg, "straight", progress=False, trust_code=True)

    rows = read_history("run")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for key in ("test_acc", "fr_fgsm", "fr_pgd", "eff_rank_block.conv1", "train_l1"):
        assert [r[key] for r in rows] == [r[key] for r in straight.history], key
    assert rows[-1]["train_l1"] > 0 and rows[-1]["train_nuclear"] > 0
    assert [k[len("eff_rank_") :] for k in rows[0] if k.startswith("eff_rank_")] == FORWARD_ORDER
    assert {"mi_stem_ixt_upper", "mi_output_iyt_lower"} <= set(rows[0])
    resumed, _ = load_checkpoint("run/final.safetensors", trust_code=True)
    for a, b in zip(resumed.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)

    saved = yaml.safe_load((root / "run" / "config.yaml").read_text())
    assert (
        saved["dataset"]["sha256"]
        == __import__("hashlib").sha256((root / "data.npz").read_bytes()).hexdigest()
    )

    # the data changes: resuming (even a finished run) is refused and says why
    write_npz(root / "data.npz", seed=1)
    changed = runner.invoke(app, [*args, "--resume", "--trust-code"])
    assert changed.exit_code == 2
    assert "data changed" in changed.output and "data.npz" in changed.output


def test_user_checkpoint_needs_trust_code(workdir):
    root, module = workdir
    sys.modules.pop(module, None)
    model = rr.models.set_input_shape(
        create_model(f"{module}:TinyResNet", trust_code=True, width=4), (3, 32, 32)
    )
    imported = sys.modules[module].IMPORTED
    path = rr.save_checkpoint(model, root / "m.safetensors", note="user")
    sys.modules.pop(module)

    with pytest.raises(CheckpointError, match=r"import path.*trust_code=True.*--trust-code"):
        load_checkpoint(path)
    assert module not in sys.modules  # refusing imported nothing
    out = runner.invoke(app, ["info", str(path)])
    assert out.exit_code == 2 and "--trust-code" in out.output

    loaded, meta = load_checkpoint(path, trust_code=True)
    # built twice: on the meta device to check the file's shapes first, then for real
    assert meta == {"note": "user"} and sys.modules[module].IMPORTED == [4, 4]
    assert imported == [4]
    x = torch.rand(5, 3, 32, 32)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert [layer.name for layer in named_weight_layers(loaded)] == FORWARD_ORDER
    out = runner.invoke(app, ["info", str(path), "--trust-code"])
    assert out.exit_code == 0 and "block.conv1" in out.output


def test_cli_evaluate_and_analyze_on_a_user_checkpoint(workdir):
    root, module = workdir
    cfg = rr.training.config_from_dict(user_config(module, epochs=1), trust_code=True)
    train(cfg, "run", progress=False, trust_code=True)
    ckpt = "run/final.safetensors"
    out = runner.invoke(
        app, ["evaluate", ckpt, "--attack", "fgsm", "--n", "40", "--trust-code", "--no-progress"]
    )
    assert out.exit_code == 0, out.output
    assert "npz test, n=40" in out.output  # the dataset came from the checkpoint metadata
    out = runner.invoke(app, ["analyze", ckpt, "--n", "40", "--trust-code", "--out", "a.json"])
    assert out.exit_code == 0, out.output
    report = json.loads((root / "a.json").read_text())
    assert [r["module"] for r in report["structure"]] == FORWARD_ORDER
    assert [r["layer"] for r in report["mi"]] == ["stem", "block.conv1", "block.conv2", "output"]


# --------------------------------------------------------------------------- layers


class Shuffled(nn.Module):
    """Registration order (head, body.1, body.0) differs from forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 2)
        self.body = nn.ModuleList([nn.Conv2d(1, 3, 3), nn.Conv2d(3, 6, 3)])

    def forward(self, x):
        h = torch.tanh(self.body[0](x))
        return self.head(torch.tanh(self.body[1](h)).mean(dim=(2, 3)))


def test_forward_order_by_hooks_and_keys():
    model = Shuffled()
    # without an input shape the order is unknown: names work, paper indices say how to fix
    assert [layer.name for layer in named_weight_layers(model)] == ["head", "body.0", "body.1"]
    with pytest.raises(LayerOrderUnknown, match="set_input_shape"):
        l1_penalty(model, {1: 0.1})
    assert l1_penalty(model, {"body.1": 0.1}).item() == pytest.approx(
        0.1 * model.body[1].weight.abs().sum().item()
    )
    rr.models.set_input_shape(model, (1, 8, 8))
    layers = named_weight_layers(model)
    assert [(layer.name, layer.index) for layer in layers] == [
        ("body.0", 1),
        ("body.1", 2),
        ("head", 3),
    ]
    mats = weight_matrices(model)
    assert list(mats) == ["body.0", "body.1", "head"] and tuple(mats["body.1"].shape) == (6, 27)
    # index 1 is the first layer in forward order; globs select several; overlaps refused
    w0 = model.body[0].weight.abs().sum().item()
    w1 = model.body[1].weight.abs().sum().item()
    assert l1_penalty(model, {1: 0.5}).item() == pytest.approx(0.5 * w0)
    assert l1_penalty(model, {"body.*": 0.5}).item() == pytest.approx(0.5 * (w0 + w1))
    with pytest.raises(ValueError, match="selected by both 'body.\\*' and 1"):
        l1_penalty(model, {"body.*": 0.5, 1: 0.1})
    with pytest.raises(ValueError, match=r"no weight layer matches 'layer\*'; Shuffled has layers"):
        l1_penalty(model, {"layer*": 0.1})
    # the joint chain of Eq. (7) is the trailing Linear run: here just the head
    expected = model.head.weight.abs().sum().item()
    assert joint_l1_penalty(model, 1.0).item() == pytest.approx(expected)


def test_joint_regulariser_refuses_a_model_without_a_linear_chain():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Identity())
    rr.models.set_input_shape(model, (1, 5, 5))
    with pytest.raises(ValueError, match=r"joint regulariser \(Eq. 7\) needs fully connected"):
        rr.Regularizer(joint=0.1)(model)


def test_activations_through_hooks_match_a_manual_forward():
    model = Shuffled().eval()
    x = torch.rand(7, 1, 8, 8)
    acts = named_layer_activations(model, x, batch_size=3, layers=["body.*"])
    assert list(acts) == ["body.0", "body.1", "output"]
    # batches of 3 against one batch of 7: the convolution may pick another algorithm, so
    # values agree to float32 rounding (an absolute 1e-6 on outputs of order 1), not bitwise
    close = {"rtol": 1e-5, "atol": 1e-6}
    assert torch.allclose(acts["body.0"], model.body[0](x).flatten(1), **close)
    h = torch.tanh(model.body[0](x))
    assert torch.allclose(acts["body.1"], model.body[1](h).flatten(1), **close)
    assert torch.allclose(acts["output"], model(x), **close)
    with pytest.raises(ValueError, match="no module of Shuffled matches 'nope'"):
        named_layer_activations(model, x, layers=["nope"])


# --------------------------------------------------------------------------- registries


def test_model_registry_errors():
    with pytest.raises(ValueError, match=r"unknown model 'fcn'; did you mean 'fcnn'\?"):
        create_model("fcn")
    with pytest.raises(ValueError, match="already registered"):
        register_model("fcnn", nn.Linear)
    with pytest.raises(ValueError, match="without ':'"):
        register_model("a:b", nn.Linear)
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        create_model("no_such_module_xyz:Net", trust_code=True)
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        create_model("torch.nn:Nope", trust_code=True)
    with pytest.raises(ValueError, match="trust_code=True"):
        create_model("torch.nn:Linear", in_features=2, out_features=2)
    assert isinstance(
        create_model("torch.nn:Linear", trust_code=True, in_features=2, out_features=2), nn.Linear
    )


def test_registered_user_model_and_decorator():
    @register_model("test-tiny-mlp", input_shape=(1, 4, 4), overwrite=True)
    def tiny_mlp(hidden: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    model = create_model("test-tiny-mlp", hidden=5)
    assert "test-tiny-mlp" in rr.list_models()
    assert [layer.index for layer in named_weight_layers(model, require_order=True)] == [1, 2]
    assert model.robustrank_spec == {"name": "test-tiny-mlp", "options": {"hidden": 5}}


# --------------------------------------------------------------------------- your own loop


def test_regularizer_and_tracker_in_a_hand_written_loop(tmp_path):
    torch.manual_seed(0)
    model = Shuffled()
    x = torch.rand(64, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    reg = rr.Regularizer(l1={"body.*": 1e-3}, nuclear={"head": 1e-2}, joint=1e-3)
    tracker = rr.StructureTracker(model, tmp_path / "log", x=x, y=y, attacks=["fgsm"], eval_n=32)

    # Eq. (8)'s penalty against an independent numpy computation
    w = {n: p.detach().numpy() for n, p in model.named_parameters() if n.endswith("weight")}
    mat = {k: v.reshape(v.shape[0], -1) for k, v in w.items()}
    expected = (
        1e-3 * (np.abs(w["body.0.weight"]).sum() + np.abs(w["body.1.weight"]).sum())
        + 1e-2 * np.linalg.svd(mat["head.weight"], compute_uv=False).sum()
        + 1e-3 * np.abs(w["head.weight"]).sum()
    )
    assert reg(model).item() == pytest.approx(expected, rel=1e-5)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(1, 4):
        loss = F.cross_entropy(model(x), y) + reg(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        row = tracker.log(epoch=epoch, step=epoch, loss=loss.item())
    head = model.head.weight.detach().double().numpy()
    s = np.linalg.svd(head, compute_uv=False)
    assert row["eff_rank_head"] == pytest.approx(s.sum() / np.sqrt((s**2).sum()))
    assert row["eff_sparsity_head"] == pytest.approx(np.abs(head).sum() / np.linalg.norm(head))
    rows = tracker.rows()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and 0 <= rows[-1]["fr_fgsm"] <= 1
    header = (tmp_path / "log" / "structure.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["step", "epoch", "loss"] and "eff_rank_body.0" in header

    with pytest.raises(FileExistsError, match="resume=True"):
        rr.StructureTracker(model, tmp_path / "log")
    again = rr.StructureTracker(
        model, tmp_path / "log", x=x, y=y, attacks=["fgsm"], eval_n=32, resume=True
    )
    with pytest.raises(ValueError, match="columns differ"):
        again.log(epoch=4)
    again.log(epoch=4, step=4, loss=0.0)
    assert len(again.rows()) == 4
    with pytest.raises(ValueError, match="unknown attack 'pgdd'"):
        rr.StructureTracker(model, tmp_path / "x", x=x, y=y, attacks=["pgdd"])
