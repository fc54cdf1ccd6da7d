"""Training configs, presets, runs, history and exact resume (Section 5, Appendix A)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from robustrank import training
from robustrank.models import load_checkpoint
from robustrank.training import (
    ConfigError,
    RunError,
    TrainConfig,
    config_from_dict,
    list_presets,
    load_config,
    load_preset,
    lr_at_epoch,
    read_history,
    train,
)
from runs import same_weights

# Appendix A of the paper: clean test accuracies, Table 1 (FCNN, MNIST), Table 2 (CNN, F-MNIST)
TABLE_1 = {
    "fcnn-natural": 0.9508,
    "fcnn-fgsm": 0.9697,
    "fcnn-pgd": 0.9689,
    "fcnn-l1-1e-2": 0.9527,
    "fcnn-nuc-1e-2": 0.9681,
    "fcnn-l1-1e-2-nuc-1e-2": 0.9446,
    "fcnn-l1-1e-2-nuc-3e-2": 0.9327,
}
TABLE_2 = {
    "cnn-natural": 0.9041,
    "cnn-fgsm": 0.8639,
    "cnn-pgd": 0.864,
    "cnn-l1-1e-2-nuc2-0": 0.8917,
    "cnn-nuc2-0.05": 0.8623,
    "cnn-nuc2-0.1": 0.8614,
    "cnn-nuc2-0.5": 0.8399,
}


def tiny(**overrides) -> TrainConfig:
    """A FCNN run on 600 MNIST images: 12 batches per epoch, cheap history."""
    data = {
        "name": "tiny",
        "model": {"name": "fcnn"},
        "dataset": "mnist",
        "train_subset": 600,
        "epochs": 2,
        "batch_size": 50,
        "lr": 0.05,
        "history": {"eval_n": 60, "test_accuracy_n": 300, "attacks": ["fgsm"]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(data)


def without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


class Stop(Exception):
    pass


# --------------------------------------------------------------------------- config


def test_yaml_round_trip(tmp_path):
    cfg = tiny(regularizers={"l1": {1: 0.01}, "nuclear": {2: 0.5}}, adversarial={"attack": "pgd"})
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    assert yaml.safe_load(cfg.to_yaml())["regularizers"]["l1"] == {1: 0.01}


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"regularizers": {"l1": {1: -0.1}}}, r"regularizers\.l1\.1: .*finite number >= 0"),
        (
            {"regularizers": {"nuclear": {9: 0.1}}},
            r"layer index 9 does not exist; FCNN has layers 1\.\.6",
        ),
        (
            {"adversarial": {"eps": -0.01}},
            r"adversarial\.eps: eps must be an l_inf budget in \[0, 1\]",
        ),
        ({"history": {"eps": -1.0}}, r"history\.eps: eps must be"),
        ({"lr": 0.0}, r"lr: lr must be a finite number > 0"),
        ({"epochs": 0}, r"epochs: epochs must be an integer >= 1"),
        ({"adversarial": {"mix": 1.5}}, r"mix must lie in \[0, 1\]"),
        ({"adversarial": {"attack": "cw"}}, r"adversarial\.attack"),
        ({"model": {"name": "resnet"}}, r"unknown model 'resnet'"),
        ({"model": {"name": "fcnn", "options": {"widht": 3}}}, r"model\.options: bad options"),
        (
            {"init": {"from_preset": "fcnn-natral"}},
            r"unknown preset 'fcnn-natral'; did you mean 'fcnn-natural'",
        ),
        ({"device": "gpu"}, r"device must be 'cpu', 'cuda'"),
    ],
)
def test_bad_config_values(tmp_path, patch, match):
    data = tiny().plain()
    for key, value in patch.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key != "model" else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_unknown_yaml_key_is_named_with_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    data = tiny().plain()
    data["adversarial"]["epz"] = 0.1
    data["learning_rate"] = 0.1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "adversarial.epz: unknown key; did you mean 'eps'?" in msg
    assert "learning_rate: unknown key" in msg and str(path) in msg


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel: {name: fcnn\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: YAML syntax error"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_lr_schedules():
    assert lr_at_epoch(tiny(epochs=4), 3) == 0.05
    cos = tiny(epochs=4, schedule="cosine")
    assert [lr_at_epoch(cos, e) for e in (1, 3)] == pytest.approx([0.05, 0.025])
    step = tiny(epochs=9, schedule="step", lr_step_epochs=3, lr_gamma=0.5)
    assert [lr_at_epoch(step, e) for e in (1, 3, 4, 7)] == pytest.approx(
        [0.05, 0.05, 0.025, 0.0125]
    )


# --------------------------------------------------------------------------- presets


def test_presets_cover_tables_1_and_2():
    names = list_presets()
    for name, accuracy in {**TABLE_1, **TABLE_2}.items():
        assert name in names
        cfg = load_preset(name)
        assert cfg.name == name and cfg.description
        assert cfg.paper is not None and cfg.paper.accuracy == accuracy
        assert cfg.paper.table == (1 if name in TABLE_1 else 2)
    assert any(n.startswith("fcnn-joint-") for n in names)


def test_preset_settings_follow_section_5():
    for name in list_presets():
        cfg = load_preset(name)
        fcnn = cfg.model.name == "fcnn"
        assert cfg.dataset.plain() == ("mnist" if fcnn else "fashion-mnist")
        assert cfg.batch_size == (128 if fcnn else 64)
        assert cfg.momentum == 0 and cfg.weight_decay == 0 and cfg.schedule.name == "constant"
        assert cfg.optimizer.name == "sgd" and "optimizer" not in cfg.plain()
        if name.endswith("-natural"):
            assert cfg.init.from_preset is None and cfg.init.checkpoint is None
            assert cfg.lr == (0.001 if fcnn else 0.01)
        else:  # fine-tuning of the naturally trained model (Section 5)
            assert cfg.init.from_preset == ("fcnn-natural" if fcnn else "cnn-natural")
            assert cfg.lr == 0.001
        if cfg.adversarial.attack != "none":
            assert cfg.adversarial.eps == 0.05
        if cfg.adversarial.attack == "pgd":
            assert (cfg.adversarial.steps, cfg.adversarial.alpha) == (20, 0.005)
    t2 = {n: load_preset(n).regularizers for n in TABLE_2 if "nuc2" in n}
    assert all(r.l1 == {1: 0.01, 2: 0.01} for r in t2.values())
    assert [t2[f"cnn-nuc2-{lam}"].nuclear for lam in ("0.05", "0.1", "0.5")] == [
        {2: 0.05},
        {2: 0.1},
        {2: 0.5},
    ]
    assert load_preset("fcnn-l1-1e-2-nuc-3e-2").regularizers.nuclear == {1: 0.03}


def test_unknown_preset_suggests_close_match():
    with pytest.raises(
        ConfigError, match=r"unknown preset 'cnn-pdg'; did you mean 'cnn-pgd'.*cnn-natural"
    ):
        load_preset("cnn-pdg")


# --------------------------------------------------------------------------- runs


def test_short_natural_run_learns_mnist(tmp_path):
    cfg = tiny(
        train_subset=4000,
        epochs=2,
        batch_size=32,
        lr=0.05,
        momentum=0.9,
        history={"test_accuracy_n": 2000, "eval_n": 100, "attacks": []},
    )
    result = train(cfg, tmp_path / "run", progress=False)
    kinds = [(r["kind"], r["epoch"]) for r in result.history]
    assert kinds == [("init", 0), ("epoch", 1), ("epoch", 2)]
    assert result.history[-1]["test_acc"] >= 0.8
    assert result.history[0]["train_ce"] is None  # the epoch-0 record is before training
    # the saved model reproduces the recorded accuracy (independent evaluation loop)
    model, meta = load_checkpoint(result.final_checkpoint)
    assert meta["dataset"] == "mnist" and meta["preset"] == "tiny" and meta["epoch"] == 2
    x, y = training.setup._load_dataset("mnist", "test")
    from robustrank.data import eval_subset

    xs, ys = eval_subset(x, y, 2000, seed=0)
    with torch.no_grad():
        acc = (model(xs).argmax(1) == ys).double().mean().item()
    assert acc == pytest.approx(result.history[-1]["test_acc"], abs=1e-6)
    # csv and jsonl carry the same rows
    lines = result.history_csv.read_text().splitlines()
    assert len(lines) == 1 + len(result.history)
    assert lines[0].split(",")[:3] == ["kind", "epoch", "step"]
    assert (tmp_path / "run" / "done.json").exists()
    assert not (tmp_path / "run" / "resume.safetensors").exists()


def resume_config() -> TrainConfig:
    return tiny(
        epochs=2,
        momentum=0.9,
        adversarial={"attack": "pgd", "eps": 0.1, "alpha": 0.02, "steps": 3},
        regularizers={"l1": {1: 1e-3}, "nuclear": {2: 1e-3}},
        history={"every_steps": 5, "attacks": ["fgsm", "pgd"]},
    )


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [("epoch", 1), ("steps", 2)])
def test_resume_reaches_identical_weights_and_history(tmp_path, stop_at):
    cfg = resume_config()
    full = train(cfg, tmp_path / "full", progress=False)

    def interrupt(row, model):
        if (row["kind"], row["epoch"]) == stop_at:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, progress=False, callback=interrupt)
    assert not (run / "done.json").exists()
    # simulate a crash that tore a line after the last commit: resume must drop it
    with open(run / "history.jsonl", "a") as f:
        f.write('{"kind": "epo')
    resumed = train(cfg, run, resume=True, progress=False)
    assert resumed.resumed
    assert same_weights(resumed.model, full.model)
    assert without_time(resumed.history) == without_time(full.history)
    assert without_time(read_history(run)) == without_time(full.history)
    csv_rows = (run / "history.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(full.history)
    # the run covers the momentum buffers, the PGD random starts and the regularisers
    steps = [r for r in full.history if r["kind"] != "init"]
    assert all(r["train_l1"] > 0 and r["train_nuclear"] > 0 for r in steps)
    # resuming a finished run is a no-op
    before = (run / "history.jsonl").read_bytes()
    again = train(cfg, run, resume=True, progress=False)
    assert again.already_done and same_weights(again.model, full.model)
    assert (run / "history.jsonl").read_bytes() == before


def test_runs_are_deterministic_given_the_seed(tmp_path):
    cfg = tiny(epochs=1, history={"evaluate": False})
    a = train(cfg, tmp_path / "a", progress=False)
    b = train(cfg, tmp_path / "b", progress=False)
    c = train(cfg.model_copy(update={"seed": 1}), tmp_path / "c", progress=False)
    assert same_weights(a.model, b.model)
    assert not same_weights(a.model, c.model)
    assert "test_acc" not in a.history[-1] and "eff_rank_W1" in a.history[-1]


def test_training_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(tiny(epochs=1, history={"evaluate": False}), tmp_path / "r", progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_run_directory_rules(tmp_path):
    cfg = tiny(epochs=1, history={"evaluate": False})
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    with pytest.raises(RunError, match="is not empty .*--resume .*--overwrite"):
        train(cfg, run, progress=False)
    changed = cfg.model_copy(update={"lr": 0.01})
    with pytest.raises(RunError, match=r"different config; differing keys:\n  lr: run has 0.05"):
        train(changed, run, resume=True, progress=False)
    with pytest.raises(RunError, match="either resume or overwrite"):
        train(cfg, run, resume=True, overwrite=True, progress=False)
    again = train(changed, run, overwrite=True, progress=False)
    assert not again.already_done
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == 0.01
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match=r"not empty \(notes.txt\) and has no robustrank marker"):
        train(cfg, other, overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_fine_tuning_from_preset_trains_the_parent_first(tmp_path, monkeypatch, capsys):
    parent = tiny(name="tiny-parent", epochs=1, history={"evaluate": False})
    monkeypatch.setattr(
        training.preset_index, "list_presets", lambda: ["tiny-parent", "tiny-child"]
    )
    monkeypatch.setattr(training.loop, "load_preset", lambda name: {"tiny-parent": parent}[name])
    child = tiny(
        name="tiny-child",
        epochs=1,
        lr=0.01,
        seed=5,
        init={"from_preset": "tiny-parent"},
        checkpoint_every_epoch=True,
        adversarial={"attack": "fgsm", "mix": 0.5},
        history={"evaluate": False},
    )
    result = train(child, tmp_path / "tiny-child", progress=False)
    assert "training it first" in capsys.readouterr().err
    parent_dir = tmp_path / "tiny-parent"
    assert (parent_dir / "done.json").exists()
    assert yaml.safe_load((parent_dir / "config.yaml").read_text())["seed"] == 5
    parent_model, _ = load_checkpoint(parent_dir / "final.safetensors")
    start, _ = load_checkpoint(tmp_path / "tiny-child" / "checkpoint-epoch-0.safetensors")
    assert same_weights(start, parent_model)
    assert not same_weights(result.model, parent_model)
    # a second child run reuses the finished parent
    train(child, tmp_path / "tiny-child", overwrite=True, progress=False)
    assert "training it first" not in capsys.readouterr().err


def test_init_checkpoint_must_match_architecture(tmp_path):
    base = train(tiny(epochs=1, history={"evaluate": False}), tmp_path / "base", progress=False)
    cfg = tiny(
        model={"name": "fcnn", "options": {"width": 10}},
        init={"checkpoint": str(base.final_checkpoint)},
    )
    with pytest.raises(ConfigError, match="make model: match the checkpoint"):
        train(cfg, tmp_path / "ft", progress=False)


def test_history_columns_and_mi(tmp_path):
    cfg = tiny(epochs=1, history={"track_mi": True, "mi_n": 50, "attacks": ["fgsm", "gnm"]})
    rows = train(cfg, tmp_path / "r", progress=False).history
    row = rows[-1]
    for key in (
        "train_ce",
        "train_total",
        "train_acc",
        "test_acc",
        "fr_fgsm",
        "fr_gnm",
        "eff_rank_W6",
        "eff_sparsity_W1",
        "mi_t1_ixt_upper",
        "mi_t5_iyt_lower",
    ):
        assert key in row and row[key] is not None and math.isfinite(row[key])
    assert "fr_pgd" not in row
    assert row["train_total"] == pytest.approx(row["train_ce"])  # no regulariser
    assert 1.0 <= row["eff_rank_W1"] <= math.sqrt(20)
    assert rows[0]["mi_t1_ixt_upper"] <= math.log2(50) + 1e-9
    lines = (tmp_path / "r" / "history.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == rows


def test_cli_train_and_presets(tmp_path):
    from typer.testing import CliRunner

    from robustrank.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["presets"])
    assert listed.exit_code == 0
    assert all(name in listed.output for name in [*TABLE_1, *TABLE_2])
    assert "0.9508" in listed.output and "0.8399" in listed.output
    bad = runner.invoke(app, ["train", "--preset", "fcnn-natrual"])
    assert bad.exit_code == 2 and "did you mean 'fcnn-natural'" in bad.output
    both = runner.invoke(app, ["train", "x.yaml", "--preset", "fcnn-natural"])
    assert both.exit_code == 2 and "exactly one of" in both.output
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny(history={"evaluate": False}).to_yaml())
    out = tmp_path / "run"
    args = ["train", str(path), "--epochs", "1", "--out", str(out), "--no-progress"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 1
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "not empty" in refused.output
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0


def test_fine_tune_reuses_the_parents_final_evaluation_exactly(tmp_path, monkeypatch):
    history = {"eval_n": 60, "attacks": ["fgsm", "pgd"], "pgd_steps": 3}
    parent = tiny(name="tiny-parent", epochs=1, history=history)
    monkeypatch.setattr(training.preset_index, "list_presets", lambda: ["tiny-parent"])
    monkeypatch.setattr(training.loop, "load_preset", lambda name: {"tiny-parent": parent}[name])
    child = tiny(
        name="tiny-child",
        epochs=1,
        init={"from_preset": "tiny-parent"},
        history={**history, "every_steps": 5},  # scheduling differs: still reusable
    )
    first = train(child, tmp_path / "tiny-child", progress=False).history[0]
    parent_last = read_history(tmp_path / "tiny-parent")[-1]
    # an independent evaluation of the same starting weights (no reuse from a checkpoint)
    ckpt = str(tmp_path / "tiny-parent" / "final.safetensors")
    direct = tiny(name="direct", epochs=1, init={"checkpoint": ckpt}, history=history)
    recomputed = train(direct, tmp_path / "direct", progress=False).history[0]
    measured = [k for k in recomputed if k.startswith(("test_acc", "fr_", "eff_"))]
    assert "fr_pgd" in measured and "eff_rank_W1" in measured
    for key in measured:
        assert first[key] == parent_last[key] == recomputed[key], key


def test_a_run_directory_in_use_is_refused(tmp_path):
    pytest.importorskip("fcntl")
    run = tmp_path / "run"
    cfg = tiny(epochs=1, history={"evaluate": False})
    with training.rundir.run_lock(run):  # as if another process were training there
        with pytest.raises(RunError, match=r"another process \(pid \d+\) is training in"):
            train(cfg, run, progress=False)
    train(cfg, run, progress=False)  # free again; the lock file does not count as content
    assert (run / "done.json").exists()


def test_training_and_history_take_any_registered_attack(tmp_path, monkeypatch):
    """A user attack registered by name drives adversarial training and the history."""
    from robustrank.attacks import Attack, register_attack
    from robustrank.attacks import registry as attack_registry

    calls = []

    class SignNoise(Attack):
        """x + eps * s with seeded random signs s (a registered user attack)."""

        def __init__(self, model, eps, seed: int | None = None) -> None:
            super().__init__(model, eps)
            self.seed = seed

        def perturb(self, x, y, early_stop=False):
            calls.append(self.seed)
            g = torch.Generator().manual_seed(self.seed or 0)
            s = torch.randint(0, 2, x.shape, generator=g).to(x.dtype) * 2 - 1
            return (x + self.eps * s).clamp(0.0, 1.0), None

    monkeypatch.setattr(attack_registry, "REGISTRY", attack_registry.REGISTRY.copy())
    register_attack("sign-noise", SignNoise)
    cfg = tiny(
        epochs=1,
        adversarial={"attack": "sign-noise", "eps": 0.1},
        history={"eval_n": 60, "test_accuracy_n": 300, "attacks": ["fgsm", "sign-noise"]},
    )
    result = train(cfg, tmp_path / "run", progress=False)
    last = result.history[-1]
    assert 0.0 <= last["fr_sign-noise"] <= 1.0 and "fr_fgsm" in last
    # one seeded attack per training batch (12), each seed derived from the run's seed
    train_seeds = [s for s in calls if s != cfg.history.eval_seed]
    assert len(train_seeds) == 12 and len(set(train_seeds)) == 12
    with pytest.raises(ConfigError, match=r"unknown attack 'sign-nois'; .*did you mean"):
        tiny(adversarial={"attack": "sign-nois"})
