"""Multi-fidelity sweeps: rung decisions, paused training, stored signals, resume, executors.

The decisions are checked on constructed signals against a brute-force reference written
here (top ``ceil(n / eta)`` by robust signal, union the combinations no other dominates
within the tolerances). End to end, tiny FCNN trials (1-3 epochs on 2000 images) check
that a survivor's numbers are those of the same trial in a plain grid (a paused and
resumed run is the uninterrupted run), that a killed driver resumes to the same table,
and that Ray gives the local table.
"""

import json
import math
import random
import sys

import pytest

from robustrank.evaluation import SIGNAL_FILE
from robustrank.sweeps import SpecError, SweepError, run_sweep, sweep_status
from robustrank.sweeps.fidelity import judge_rung
from robustrank.sweeps.spec import spec_from_dict
from robustrank.training import config_from_dict, load_preset, read_history, train
from sweeping import TINY, kill_when, ray_sweep, table, tiny_spec

# ----------------------------------------------------------------------------- decisions


def _reference_kept(signals, eta, tol, margin):
    """Brute force: the top ceil(n/eta) by (robust, clean, key), plus every combination
    that no other is at least ``margin`` more robust than, at most ``tol`` less clean,
    and strictly better than in one coordinate."""
    names = sorted(signals)
    ranked = sorted(names, key=lambda k: (-signals[k][1], -signals[k][0], k))
    top = set(ranked[: math.ceil(len(names) / eta)])
    free = set()
    for c in names:
        cc, cr = signals[c]
        if not any(
            dr >= cr + margin and dc >= cc - tol and (dr > cr or dc > cc)
            for d, (dc, dr) in signals.items()
            if d != c
        ):
            free.add(c)
    return top | free


def test_a_trial_that_cannot_reach_the_front_is_stopped_and_one_that_can_is_not():
    signals = {
        "most robust": (0.80, 0.50),
        "most accurate": (0.95, 0.20),  # on the front although far from the top
        "between": (0.90, 0.40),  # on the front
        "dominated": (0.85, 0.30),  # "between" beats it on both: cannot reach the front
        "worst": (0.70, 0.10),
        "twin": (0.80, 0.50),  # equal to the most robust: does not dominate it
    }
    verdicts = judge_rung(signals, eta=3)
    kept = {k for k, v in verdicts.items() if v.kept}
    assert kept == {"most robust", "twin", "most accurate", "between"}
    assert not verdicts["dominated"].kept and "between" in verdicts["dominated"].reason
    assert verdicts["most accurate"].reason == "on the signal's Pareto front"
    assert verdicts["most robust"].reason.startswith("top 1/3")


def test_tolerances_stop_what_is_only_noise_better():
    # 0.3 points more clean accuracy does not save a combination 10 points less robust
    # once the clean tolerance is 0.5 points; a 1-point robust lead does not stop one
    # once the robust margin is 2 points
    signals = {"a": (0.900, 0.50), "b": (0.903, 0.40), "c": (0.899, 0.49), "d": (0.5, 0.1)}
    plain = {k for k, v in judge_rung(signals, eta=4).items() if v.kept}
    assert plain == {"a", "b"}  # b has the most clean accuracy; c is dominated by a
    tolerant = judge_rung(signals, eta=4, clean_tolerance=0.005)
    assert {k for k, v in tolerant.items() if v.kept} == {"a"}
    margin = judge_rung(signals, eta=4, robust_margin=0.02)
    assert {k for k, v in margin.items() if v.kept} == {"a", "b", "c"}


@pytest.mark.parametrize("seed", range(30))
def test_decisions_match_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 12)
    grid = [round(0.05 * i, 2) for i in range(21)]  # coarse values: ties happen
    signals = {f"c{i}": (rng.choice(grid), rng.choice(grid)) for i in range(n)}
    eta, tol, margin = rng.choice([2, 3, 4.5]), rng.choice([0, 0.05]), rng.choice([0, 0.1])
    verdicts = judge_rung(signals, eta, tol, margin)
    assert {k for k, v in verdicts.items() if v.kept} == _reference_kept(signals, eta, tol, margin)
    assert sum(v.kept for v in verdicts.values()) >= math.ceil(n / eta)


# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "change, names",
    [
        ({"strategy": "halving"}, ["fidelity", "rungs"]),
        ({"fidelity": {"rungs": [1]}}, ["fidelity", "halving"]),
        ({"strategy": "halving", "fidelity": {"rungs": [2, 1]}}, ["ascending"]),
        ({"strategy": "halving", "fidelity": {"rungs": [4]}}, ["fidelity.rungs", "epochs"]),
        ({"strategy": "halving", "fidelity": {"rungs": [1], "eta": 1}}, ["eta"]),
        ({"strategy": "halving", "fidelity": {"rungs": [1], "pruner": "median"}}, ["pruner"]),
        (
            {"strategy": "optuna", "n_trials": 2, "fidelity": {"rungs": [1]}},
            ["fidelity.pruner", "median"],
        ),
        ({"strategy": "halving", "fidelity": {"rungs": [1], "signal": {"atack": 1}}}, ["attack"]),
        ({"strategy": "halving", "fidelity": {"rungs": [1], "signal": {"attack": "x"}}}, ["x"]),
    ],
)
def test_bad_fidelity_specs_name_the_key(change, names):
    data = tiny_spec(overrides={**TINY, "epochs": 3}, **change)
    with pytest.raises(SpecError) as err:
        spec_from_dict(data)
    for name in names:
        assert name in str(err.value)


# ----------------------------------------------------------------------------- training


def test_a_paused_run_resumes_to_the_uninterrupted_run(tmp_path):
    config = config_from_dict(
        {**load_preset("fcnn-natural").plain(), **TINY, "epochs": 3, "seed": 4}
    )
    whole = train(config, tmp_path / "whole", progress=False)
    paused = train(config, tmp_path / "part", progress=False, until_epoch=2)
    assert paused.paused and not (tmp_path / "part" / "done.json").exists()
    assert [r["epoch"] for r in paused.history] == [0, 1, 2]
    again = train(config, tmp_path / "part", resume=True, progress=False, until_epoch=2)
    assert again.paused and len(read_history(tmp_path / "part")) == 3  # nothing trained
    done = train(config, tmp_path / "part", resume=True, progress=False)
    assert not done.paused and (tmp_path / "part" / "done.json").exists()

    def timeless(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]

    assert timeless(done.history) == timeless(whole.history)


# ----------------------------------------------------------------------------- sweeps


def _halving(name="hv", **extra):
    data = tiny_spec(
        name=name,
        overrides={**TINY, "epochs": 3},
        space={"regularizers.l1.1": [0.0, 0.001, 0.01, 0.03], "seed": [0, 1]},
        strategy="halving",
        fidelity={"rungs": [1, 2], "eta": 2, "signal": {"n": 50, "options": {"steps": 10}}},
    )
    data.update(extra)
    return data


@pytest.fixture(scope="module")
def halved(tmp_path_factory):
    """One uninterrupted halving sweep (4 combinations x 2 seeds, rungs at epochs 1, 2)."""
    out = tmp_path_factory.mktemp("halving") / "a"
    return run_sweep(spec_from_dict(_halving()), out, progress=False)


def test_survivors_match_the_grid_and_stopped_trials_are_marked(halved, tmp_path):
    rows = {r["trial"]: r for r in halved.rows}
    stopped = [r for r in rows.values() if r["status"] == "stopped"]
    done = [r for r in rows.values() if r["status"] == "done"]
    assert stopped and done and len(stopped) + len(done) == 8
    # the signals the decisions were made on, read back from the run directories
    for r in rows.values():
        run = halved.out_dir / r["run_dir"]
        saved = json.loads((run / SIGNAL_FILE.format(epoch=r["signal_epoch"])).read_text())
        assert saved["result"]["robust_acc"] == r["signal_robust"]
        assert saved["result"]["clean_acc"] == r["signal_clean"]
    for r in stopped:  # paused at its last rung: trained that far, not further
        run = halved.out_dir / r["run_dir"]
        assert not (run / "done.json").exists() and r.get("robust_acc") is None
        assert [h["epoch"] for h in read_history(run)][-1] == r["signal_epoch"]
        assert r["stop_reason"].startswith("dominated by")
    # a combination is judged as a whole: both seeds go on or stop together
    fate = {}
    for r in rows.values():
        fate.setdefault(r["values"]["regularizers.l1.1"], set()).add(r["status"])
    assert all(len(s) == 1 for s in fate.values())
    # survivors are the grid's trials: same configs, same numbers (paused, resumed runs)
    grid = run_sweep(
        spec_from_dict(_halving(name="hv", strategy="grid", fidelity=None)),
        tmp_path / "grid",
        progress=False,
    )
    by_values = {json.dumps(r["values"], sort_keys=True): r for r in grid.rows}
    for r in done:
        g = by_values[json.dumps(r["values"], sort_keys=True)]
        for key in ("clean_acc", "robust_acc", "eff_rank_W1", "eff_sparsity_W1", "fr_pgd"):
            assert r[key] == g[key], key
    csv = (halved.out_dir / "trials.csv").read_text()
    assert "stopped" in csv and "signal_robust" in csv and "stop_reason" in csv
    report = halved.report_html.read_text()
    assert "Multi-fidelity" in report and "stopped because" in report
    status = sweep_status(halved.out_dir)
    assert (status.done, status.stopped, status.running, status.pending) == (
        len(done),
        len(stopped),
        0,
        0,
    )
    assert f"{len(stopped)} stopped at a rung" in status.format()
    summary = json.loads((halved.out_dir / "summary.json").read_text())
    assert summary["stopped"] == len(stopped) and summary["done"] == len(done)
    assert summary["trial_seconds"] == pytest.approx(sum(r["seconds"] for r in halved.rows))


def test_a_second_run_reuses_every_rung_and_decides_the_same(halved, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in halved.out_dir.glob("trials/*/*.safetensors")}
    again = run_sweep(spec_from_dict(_halving()), halved.out_dir, progress=False)
    assert table(again.out_dir) == table(halved.out_dir)
    after = {p: p.stat().st_mtime_ns for p in halved.out_dir.glob("trials/*/*.safetensors")}
    assert after == before  # nothing trained again, not even a stopped trial


@pytest.mark.slow
def test_sigkilled_halving_sweep_resumes_to_the_uninterrupted_table(halved, tmp_path):
    spec = tmp_path / "hv.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(_halving()), encoding="utf-8")
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "robustrank", "sweep", "run", str(spec), "--out", str(out)]

    def second_rung_started() -> bool:  # rung 1 judged, rung 2 under way
        return any(out.glob("trials/*/" + SIGNAL_FILE.format(epoch=2)))

    kill_when([*cmd, "--no-progress"], second_rung_started)
    status = sweep_status(out)
    assert status.total == 8 and status.driver is None and status.done == 0
    result = run_sweep(spec_from_dict(_halving()), out, progress=False)
    assert table(result.out_dir) == table(halved.out_dir)


@pytest.mark.slow
def test_ray_executor_gives_the_local_halving_table(halved, tmp_path):
    pytest.importorskip("ray")
    result = ray_sweep(spec_from_dict(_halving()), tmp_path / "ray")
    assert table(result.out_dir) == table(halved.out_dir)


def test_each_rung_keeps_what_brute_force_keeps_on_the_seed_means(halved):
    """Replays the sweep's decisions from the signals stored in the run directories: at
    each rung, the combinations' mean signals over seeds, judged by brute force, give
    exactly the trials that reached the next rung (or the end)."""
    rows = halved.rows
    alive = list(rows)
    for epoch in (1, 2):
        means = {}
        for r in alive:
            run = halved.out_dir / r["run_dir"]
            saved = json.loads((run / SIGNAL_FILE.format(epoch=epoch)).read_text())["result"]
            means.setdefault(r["values"]["regularizers.l1.1"], []).append(
                (saved["clean_acc"], saved["robust_acc"])
            )
        signals = {k: tuple(sum(x) / len(x) for x in zip(*v)) for k, v in means.items()}
        kept = _reference_kept(signals, 2, 0, 0)
        alive = [r for r in alive if r["values"]["regularizers.l1.1"] in kept]
        expected = {r["trial"] for r in rows if r["status"] == "done" or r["signal_epoch"] > epoch}
        assert {r["trial"] for r in alive} == expected
    assert {r["trial"] for r in alive} == {r["trial"] for r in rows if r["status"] == "done"}


# ----------------------------------------------------------------------------- optuna


def _optuna_spec(pruner="median", **extra):
    data = tiny_spec(
        name="op",
        overrides={**TINY, "epochs": 3},
        space={"regularizers.l1.1": [0.0, 0.001, 0.01, 0.03, 0.1], "seed": [0, 1]},
        strategy="optuna",
        n_trials=8,
        batch=4,
        fidelity={
            "rungs": [1, 2],
            "eta": 2,
            "pruner": pruner,
            "signal": {"n": 50, "options": {"steps": 10}},
        },
    )
    data.update(extra)
    return spec_from_dict(data)


def test_optuna_median_pruner_stops_below_the_median_on_constructed_signals(tmp_path):
    pytest.importorskip("optuna")
    from robustrank.sweeps.strategies import OptunaDriver

    driver = OptunaDriver(_optuna_spec("median"), tmp_path)
    asked = driver.ask(7)
    signals = [0.10, 0.20, 0.30, 0.40, 0.50]  # five startup trials complete
    for (number, _), robust in zip(asked, signals):
        assert not driver.report(number, 1, robust)  # nothing is pruned during start-up
        driver.tell(number, 0.9, robust)
    (low, _), (high, _) = asked[5], asked[6]
    # Optuna's median rule: prune when the value at the step is below the median (0.30)
    # of the completed trials' values at that step
    assert driver.report(low, 1, 0.25)
    driver.prune(low)
    assert not driver.report(high, 1, 0.35)
    assert [n for n, _ in driver.pruned()] == [low] and driver.pruned_at(low) == 1
    assert high in [n for n, _ in driver.unfinished()]


def test_optuna_pruned_trials_are_stopped_rows_and_rebuilt_on_resume(tmp_path):
    optuna = pytest.importorskip("optuna")
    out = tmp_path / "op"
    result = run_sweep(_optuna_spec("successive-halving"), out, progress=False)
    study = optuna.load_study(study_name="op", storage=f"sqlite:///{out / 'optuna.db'}")
    states = {t.number: t.state.name for t in study.trials}
    rows = {r["index"]: r for r in result.rows}
    assert sorted(rows) == sorted(states) and len(rows) == 8
    for number, state in states.items():
        expected = {"PRUNED": "stopped", "COMPLETE": "done"}[state]
        assert rows[number]["status"] == expected
    assert "PRUNED" in states.values()  # the signals of this sweep do prune
    # the driver dies and the trial table is lost: the next run rebuilds it from the
    # study and the stored signals, without training
    before = table(out)
    (out / "trials.json").unlink()
    again = run_sweep(_optuna_spec("successive-halving"), out, progress=False)
    assert table(again.out_dir) == before


def test_a_sweep_written_before_fidelity_existed_is_the_same_sweep(tmp_path):
    # sweep.json of an earlier robustrank has no "fidelity" key; a grid spec (fidelity
    # null) over that directory resumes it instead of refusing it as another sweep
    out = tmp_path / "old"
    spec = spec_from_dict(tiny_spec(name="old"))
    run_sweep(spec, out, progress=False)
    record = json.loads((out / "sweep.json").read_text())
    assert record["identity"]["spec"].pop("fidelity") is None
    (out / "sweep.json").write_text(json.dumps(record))
    before = table(out)
    assert table(run_sweep(spec, out, progress=False).out_dir) == before
    with pytest.raises(SweepError, match="differing: spec.name"):
        run_sweep(spec_from_dict(tiny_spec(name="new")), out, progress=False)


def test_a_rung_at_the_last_epoch_judges_trained_trials_before_the_objective(tmp_path):
    data = _halving(name="last")
    data["fidelity"] = {**data["fidelity"], "rungs": [3]}
    result = run_sweep(spec_from_dict(data), tmp_path / "last", progress=False)
    stopped = [r for r in result.rows if r["status"] == "stopped"]
    done = [r for r in result.rows if r["status"] == "done"]
    assert stopped and done
    for r in result.rows:  # every run trained to the end and was judged at epoch 3
        run = result.out_dir / r["run_dir"]
        assert (run / "done.json").exists() and r["signal_epoch"] == 3
        # the objective (AutoAttack) only for the survivors
        assert (run / "evaluation.json").exists() == (r["status"] == "done")
