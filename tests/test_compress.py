"""Post-hoc compression of a checkpoint (robustrank.experiments.compress): exact structure
in the written checkpoint, a record of what changed, reuse of the same request, refusal of
another, and a fine-tune that keeps the structure exact."""

from __future__ import annotations

import json

import pytest

from robustrank.experiments.compress import CompressError, compress
from robustrank.metrics import numerical_rank
from robustrank.models import layer_structure, load_checkpoint, weight_matrices
from robustrank.training import config_from_dict, train


@pytest.fixture(scope="module")
def natural(tmp_path_factory):
    cfg = config_from_dict(
        {
            "name": "tiny-natural",
            "model": {"name": "fcnn"},
            "dataset": "mnist",
            "train_subset": 600,
            "epochs": 1,
            "batch_size": 50,
            "lr": 0.05,
            "momentum": 0.9,
            "history": {"evaluate": False},
        }
    )
    return train(cfg, tmp_path_factory.mktemp("nat") / "run", progress=False).final_checkpoint


def test_compress_writes_an_exact_checkpoint_and_its_record(natural, tmp_path):
    out = tmp_path / "c"
    result = compress(natural, out, density={"W1": 0.05}, rank={"W2": 3, "W1": 6})
    model, meta = load_checkpoint(result.checkpoint)
    w = weight_matrices(model)
    assert numerical_rank(w["W2"]) == 3
    p = layer_structure(model.hidden[0])
    assert p.kind == "low_rank_sparse" and int(p.mask.sum()) == round(0.05 * 15680)
    record = json.loads((out / "compress.json").read_text())
    assert record["applied"] == {"hidden.0": {"rank": 6, "density": 0.05}, "hidden.1": {"rank": 3}}
    assert [r["rank"] for r in record["before"]][:2] == [20, 20]
    assert record["after"][1]["rank"] == 3 and record["after"][1]["params"] == 3 * 40
    assert meta["compressed_from"] == str(natural)
    assert "W2" in result.format() and "compression" in result.format()


def test_the_same_request_is_reused_and_another_refused(natural, tmp_path):
    out = tmp_path / "c"
    compress(natural, out, density={"W1": 0.1})
    before = (out / "compressed.safetensors").read_bytes()
    compress(natural, out, density={"W1": 0.1})
    assert (out / "compressed.safetensors").read_bytes() == before
    with pytest.raises(CompressError, match="another request.*--overwrite"):
        compress(natural, out, density={"W1": 0.2})
    compress(natural, out, density={"W1": 0.2}, overwrite=True)
    model, _ = load_checkpoint(out / "compressed.safetensors")
    assert int(layer_structure(model.hidden[0]).mask.sum()) == round(0.2 * 15680)


def test_a_foreign_directory_is_refused_untouched(natural, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(CompressError, match="notes.txt"):
        compress(natural, out, density={"W1": 0.1}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "nothing to do"),
        ({"density": {"W1": 0.1}, "method": "scores"}, "learns its mask in training"),
        ({"density": {"W1": 0.1}, "method": "pruned"}, "unknown pruning method"),
        ({"rank": {"W1": 40}}, r"\[1, 20\]"),
        ({"density": {"W8": 0.1}}, "W8"),
    ],
)
def test_bad_requests_are_clear_errors(natural, tmp_path, kwargs, match):
    with pytest.raises(CompressError, match=match):
        compress(natural, tmp_path / "c", **kwargs)


@pytest.mark.slow
def test_finetuning_keeps_the_structure_exact(natural, tmp_path):
    overrides = {"epochs": 1, "train_subset": 300, "history": {"evaluate": False}}
    adversarial = {"adversarial": {"steps": 2}}
    result = compress(
        natural,
        tmp_path / "c",
        density={"W1": 0.1},
        rank={"W3": 2},
        finetune="fcnn-pgd",
        overrides={**overrides, **adversarial},
        progress=False,
    )
    tuned, _ = load_checkpoint(result.finetune_checkpoint)
    assert int((weight_matrices(tuned)["W1"] != 0).sum()) <= round(0.1 * 15680)
    assert numerical_rank(weight_matrices(tuned)["W3"]) == 2
    assert result.record["finetune"]["preset"] == "fcnn-pgd"
    compressed, _ = load_checkpoint(result.checkpoint)
    assert not all(
        (a == b).all()
        for a, b in zip(compressed.state_dict().values(), tuned.state_dict().values())
    )


def test_compress_command_writes_and_reports(natural, tmp_path):
    from typer.testing import CliRunner

    from robustrank.cli import app

    out = tmp_path / "cli"
    args = ["compress", str(natural), "--out", str(out), "--density", "W1=0.1", "--rank", "2=3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "W2" in result.output and (out / "compressed.safetensors").is_file()
    model, _ = load_checkpoint(out / "compressed.safetensors")
    assert numerical_rank(weight_matrices(model)["W2"]) == 3
    bad = CliRunner().invoke(app, ["compress", str(natural), "--out", str(out), "--rank", "W1"])
    assert bad.exit_code == 2 and "LAYER=VALUE" in bad.output


def test_listings_name_every_registered_objective_and_pruning_method():
    from typer.testing import CliRunner

    from robustrank.cli import app
    from robustrank.structure import list_pruning_methods
    from robustrank.training import list_objectives

    for command, names in (("objectives", list_objectives()), ("pruning", list_pruning_methods())):
        result = CliRunner().invoke(app, [command])
        assert result.exit_code == 0
        listed = [line.split()[0] for line in result.output.splitlines() if line.strip()]
        assert listed == names
