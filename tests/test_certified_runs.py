"""The run-level certification (robustrank.evaluation.certified_runs): its spec, its cache
beside the attacks' cache, the conflicts check and the summary's certified metrics."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

from robustrank.evaluation import (
    CertificationSpec,
    EvaluationSpec,
    cached_evaluation,
    certificate_conflicts,
    certified_key,
    certified_positions,
    encode_mask,
)
from robustrank.evaluation import spec as spec_module
from robustrank.experiments.summary import Outcomes, summarise_run
from robustrank.training import load_preset


def test_certification_spec_names_registered_methods_once_with_ascending_eps():
    spec = CertificationSpec(methods=["IBP", "crown"], eps=[0.01, 0.02])
    assert spec.methods == ["ibp", "crown"]
    with pytest.raises(ValidationError, match="did you mean 'ibp'"):
        CertificationSpec(methods=["ibq"])
    with pytest.raises(ValidationError, match="twice"):
        CertificationSpec(methods=["ibp", "IBP"])
    with pytest.raises(ValidationError, match="strictly ascending"):
        CertificationSpec(eps=[0.02, 0.01])
    with pytest.raises(ValidationError, match="greater than 0"):
        CertificationSpec(eps=[0.0, 0.01])
    with pytest.raises(ValidationError, match="takes no option 'steps'"):
        CertificationSpec(methods=["ibp"], options={"ibp": {"steps": 3}})
    with pytest.raises(ValidationError, match=r"options are given for \['crown'\]"):
        CertificationSpec(methods=["ibp"], options={"crown": {"max_elements": 10}})


def test_certified_positions_are_a_seeded_subset_of_the_strong_inputs():
    spec = EvaluationSpec(n=50, seed=3, certification=CertificationSpec(n=20))
    pos = certified_positions(spec)
    assert len(pos) == 20 and len(set(pos.tolist())) == 20
    assert (np.diff(pos) > 0).all() and pos.min() >= 0 and pos.max() < 50
    assert np.array_equal(pos, certified_positions(spec))  # fixed
    assert not np.array_equal(pos, np.arange(20))  # not the (biased) first inputs
    whole = EvaluationSpec(n=50, certification=CertificationSpec())
    assert np.array_equal(certified_positions(whole), np.arange(50))


def test_adding_a_certification_reuses_the_cached_attacks(tmp_path, monkeypatch):
    calls = []

    def fake_evaluate_run(config, checkpoint, spec, *, trust_code=False):
        calls.append(spec)
        return {"pgd": {"n": 1}}

    monkeypatch.setattr(spec_module, "evaluate_run", fake_evaluate_run)
    ckpt = tmp_path / "final.safetensors"
    ckpt.write_bytes(b"weights")
    cache = tmp_path / "evaluation.json"
    plain = EvaluationSpec(n=10)
    first = cached_evaluation(None, ckpt, plain, cache)
    certified = plain.model_copy(update={"certification": CertificationSpec()})
    again = cached_evaluation(None, ckpt, certified, cache)
    assert len(calls) == 1 and again["pgd"] == first["pgd"]
    cached_evaluation(None, ckpt, plain.model_copy(update={"n": 11}), cache)
    assert len(calls) == 2  # a change of the attacks' settings does re-evaluate


def _mask(bits):
    return encode_mask(np.array(bits, dtype=bool))


def _certification(n, positions, rows, methods=("ibp", "crown"), eps=(0.01, 0.05)):
    correct = [True] * len(positions)
    results = [
        {"method": m, "eps": e, "certified": _mask(rows[(m, e)])} for e in eps for m in methods
    ]
    return {
        "n": n,
        "seed": 1,
        "positions": list(positions),
        "eps": list(eps),
        "methods": list(methods),
        "correct": _mask(correct),
        "results": results,
    }


def test_conflicts_name_certified_inputs_that_an_attack_of_the_run_broke():
    # 6 strong inputs; the certification uses positions 1, 3, 4
    rows = {
        ("ibp", 0.01): [1, 0, 0],
        ("crown", 0.01): [1, 1, 0],
        ("ibp", 0.05): [0, 0, 0],
        ("crown", 0.05): [0, 1, 1],
    }
    cert = _certification(6, [1, 3, 4], rows)
    evaluation = {
        "pgd": {"eps": 0.05},
        "autoattack": {"eps": 0.05},
        "outcomes": {
            "strong": {
                "n": 6,
                "seed": 1,
                "correct": _mask([1] * 6),
                "fooled": {
                    "pgd": _mask([0, 0, 0, 0, 1, 0]),  # position 4: certified by crown at 0.05
                    "autoattack": _mask([0, 0, 0, 1, 0, 0]),  # position 3: crown, 0.05 only
                },
            }
        },
        # position 1 broken at 0.008 < 0.01 where both methods certify it
        "curve": {"breaking_eps": [None, 0.008, None, 0.2, 0.05, 0.0]},
    }
    found = {(c["method"], c["eps"], c["source"]): c["inputs"] for c in
             certificate_conflicts(cert, evaluation)}  # fmt: skip
    assert found == {
        ("ibp", 0.01, "curve"): [1],
        ("crown", 0.01, "curve"): [1],
        ("crown", 0.05, "pgd"): [4],
        ("crown", 0.05, "autoattack"): [3],
        ("crown", 0.05, "curve"): [4],
    }
    # position 3 fooled at 0.05 is no conflict with a certificate at 0.01
    assert ("crown", 0.01, "autoattack") not in found
    assert certificate_conflicts(cert, None) == []


def test_summary_gives_certified_accuracy_per_method_and_the_union_as_best():
    rows = {
        ("ibp", 0.01): [1, 0, 0, 0],
        ("crown", 0.01): [0, 1, 1, 0],
        ("ibp", 0.05): [0, 0, 0, 0],
        ("crown", 0.05): [0, 0, 1, 0],
    }
    cert = _certification(10, [0, 2, 5, 7], rows)
    cert["conflicts"] = [{"method": "crown", "eps": 0.05, "source": "pgd", "inputs": [5]}]
    run = summarise_run(load_preset("fcnn-natural"), [], {"certification": cert})
    assert run.certified == {
        "ca_ibp@0.01": 0.25,
        "ca_crown@0.01": 0.5,
        "ca_ibp@0.05": 0.0,
        "ca_crown@0.05": 0.25,
        "ca_best@0.01": 0.75,
        "ca_best@0.05": 0.25,
    }
    assert run.counts["ca_best@0.01"] == [3, 4]
    out = run.outcomes["certified"]
    assert isinstance(out, Outcomes) and out.n == 4
    assert out.certified[certified_key("best", 0.01)].tolist() == [True, True, True, False]
    assert run.value("ca_crown@0.05") == 0.25
    assert any("certified-but-broken" in w for w in run.diagnostic_warnings)
    json.dumps(run.to_dict())  # the masks stay out of the JSON


def test_a_single_certifier_has_no_best_column():
    cert = _certification(3, [0, 1, 2], {("ibp", 0.01): [1, 0, 1]}, methods=("ibp",), eps=(0.01,))
    run = summarise_run(load_preset("fcnn-natural"), [], {"certification": cert})
    assert run.certified == {"ca_ibp@0.01": pytest.approx(2 / 3)}


def test_the_curve_gives_the_attacked_upper_bound_at_the_certified_eps_on_its_grid():
    rows = {("ibp", 0.01): [1, 0, 0, 0], ("ibp", 0.05): [0, 0, 0, 0]}
    cert = _certification(4, [0, 1, 2, 3], rows, methods=("ibp",))
    # breaking budgets: 0 = misclassified, None = never broken
    curve = {"eps": [0.0, 0.01, 0.02], "breaking_eps": [None, 0.01, 0.004, 0.0]}
    run = summarise_run(load_preset("fcnn-natural"), [], {"certification": cert, "curve": curve})
    # robust at eps: breaking budget > eps (an input broken exactly at eps is not robust)
    assert run.certified["ra_curve@0.01"] == 0.25 and run.counts["ra_curve@0.01"] == [1, 4]
    assert "ra_curve@0.05" not in run.certified  # 0.05 is not on the curve's grid
    assert run.certified["ca_ibp@0.01"] <= run.certified["ra_curve@0.01"]
