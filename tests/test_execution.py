"""The execution layer: task ordering, run_task, the local, process and Ray executors.

The Ray tests share one module-scoped Ray instance (2 CPUs, no dashboard), started by the
fixture as a caller would; the executor must use it and leave it running. The killed-worker
test runs its driver in a child process with its own instance, so that Ray ending a driver
cannot end the suite. The reference
for every Ray result is the same task run by the local executor in another directory:
runs are deterministic on CPU with a fixed thread count, so every number must agree.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

from robustrank.execution import (
    EVALUATION_FILE,
    ExecutionError,
    LocalExecutor,
    RunTask,
    check_dependencies,
    create_executor,
    dependency_order,
    run_task,
)
from robustrank.training import RunError, load_preset
from robustrank.training.rundir import DONE_FILE, LOCK_FILE, RESUME_FILE, read_history

EVALUATION = {
    "eps": 0.05,
    "n": 40,
    "options": {"steps": 5, "n_queries": 20},
    "curve": None,
    "diagnostics": None,
}


def _config(preset: str = "fcnn-natural", **override) -> dict:
    """A tiny config of a bundled preset: well under a second to train; the natural run
    reaches about 75% test accuracy, so the numbers compared below are not degenerate."""
    cfg = load_preset(preset).plain()
    if cfg["init"].get("from_preset") is None:
        cfg.update(epochs=2, train_subset=4000, lr=0.2, momentum=0.9)
    else:
        cfg.update(epochs=1, train_subset=1000)
    cfg["threads"] = 1
    cfg["history"].update(eval_n=100, test_accuracy_n=500, track_mi=False, every_epochs=1)
    cfg.update(override)
    return cfg


def _stub(run_dir: str, after: tuple[str, ...] = ()) -> RunTask:
    return RunTask({"name": Path(run_dir).name}, run_dir, after)


def _no_clock(data):
    """``data`` without wall-clock entries (``time_*`` history columns, ``seconds``)."""
    if isinstance(data, dict):
        return {
            k: _no_clock(v)
            for k, v in data.items()
            if not (k.startswith("time_") or k == "seconds")
        }
    if isinstance(data, list):
        return [_no_clock(v) for v in data]
    return data


def _family(root: Path) -> list[RunTask]:
    """A natural run and two fine-tunes of it (its sibling directory), children first.
    The driver creates ``root``; a worker checks that it can see it."""
    root.mkdir(parents=True, exist_ok=True)
    parent = str(root / "fcnn-natural")
    return [
        RunTask(_config("fcnn-fgsm"), str(root / "fcnn-fgsm"), (parent,), EVALUATION),
        RunTask(
            _config("fcnn-l1-1e-2-nuc-1e-2"),
            str(root / "fcnn-l1-1e-2-nuc-1e-2"),
            (parent,),
            EVALUATION,
        ),
        RunTask(_config(), parent, (), EVALUATION),
    ]


# --------------------------------------------------------------------------- ordering


def test_dependency_order_puts_every_task_after_what_it_waits_for():
    tasks = [
        _stub("r/c", ("r/b",)),
        _stub("r/d"),
        _stub("r/b", ("r/a",)),
        _stub("r/e", ("r/c", "r/a")),
        _stub("r/a"),
    ]
    order = dependency_order(tasks)
    assert sorted(order) == list(range(len(tasks)))
    position = {tasks[i].run_dir: p for p, i in enumerate(order)}
    for task in tasks:
        for dep in task.after:
            assert position[dep] < position[task.run_dir], (dep, task.run_dir)
    # independent tasks keep their given order
    assert position["r/d"] < position["r/e"]


def test_dependency_cycles_are_refused_with_the_cycle():
    tasks = [_stub("r/a", ("r/c",)), _stub("r/b", ("r/a",)), _stub("r/c", ("r/b",))]
    with pytest.raises(ExecutionError, match="cycle: r/a -> r/c -> r/b -> r/a"):
        dependency_order(tasks)


def test_check_dependencies_refuses_duplicates_and_missing_runs(tmp_path):
    with pytest.raises(ExecutionError, match="same run directory r/a"):
        check_dependencies([_stub("r/a"), _stub("r/b"), _stub("r/a")])
    missing = str(tmp_path / "parent")
    with pytest.raises(ExecutionError, match=f"waits for {missing}.*add that run as a task"):
        check_dependencies([_stub(str(tmp_path / "child"), (missing,))])
    # a finished run on disk is a valid dependency
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / DONE_FILE).write_text("{}")
    check_dependencies([_stub(str(tmp_path / "child"), (missing,))])


# --------------------------------------------------------------------------- run_task


def test_run_task_trains_evaluates_then_reuses_and_restores_threads(tmp_path):
    before = torch.get_num_threads()
    threads = 2 if before == 1 else 1
    task = RunTask(_config(threads=threads), str(tmp_path / "fcnn-natural"), (), EVALUATION)
    first = run_task(task)
    assert torch.get_num_threads() == before
    assert not first.reused and first.name == "fcnn-natural"
    assert first.worker == f"{os.uname().nodename}:{os.getpid()}"
    # the outcome is what the run directory holds
    assert first.final == read_history(task.run_dir)[-1]
    assert first.final["epoch"] == 2 and 0.5 < first.final["test_acc"] <= 1.0
    cached = json.loads((tmp_path / "fcnn-natural" / EVALUATION_FILE).read_text())
    assert cached["result"] == first.evaluation
    assert first.evaluation["pgd"]["n"] == first.evaluation["autoattack"]["n"] == 40

    second = run_task(task)
    assert second.reused and torch.get_num_threads() == before
    assert second.final == first.final and second.evaluation == first.evaluation


def test_run_task_without_the_run_directory_names_the_path_and_the_fix():
    task = RunTask(_config(), "/nonexistent-xyz/run")
    with pytest.raises(ExecutionError, match="shared filesystem") as err:
        run_task(task)
    assert "/nonexistent-xyz" in str(err.value)


def test_local_executor_names_the_failed_run_and_keeps_the_error_type(tmp_path):
    run_dir = tmp_path / "fcnn-natural"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(RunError) as err, LocalExecutor() as ex:
        ex.map([RunTask(_config(), str(run_dir))], progress=False)
    assert str(err.value).startswith(f"run fcnn-natural in {run_dir}: ")
    assert "not empty" in str(err.value)
    assert (run_dir / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- registry


def test_create_executor_refuses_unknown_names_and_ray_options_for_local(monkeypatch):
    with pytest.raises(
        ValueError, match="unknown executor 'dask'; choose one of: local, processes, ray"
    ):
        create_executor("dask")
    with pytest.raises(ValueError, match="add --executor processes"):
        create_executor("local", workers=2)
    with pytest.raises(ValueError, match="add --executor ray"):
        create_executor("local", address="head:6379")
    from robustrank.execution.ray_executor import RayExecutor, _check_reachable

    with pytest.raises(ValueError, match="at least 1"):
        RayExecutor(workers=0)
    # a cluster address nobody answers at fails at once (Ray itself retries for minutes)
    with pytest.raises(ExecutionError, match="no Ray cluster answers at 127.0.0.1:1"):
        _check_reachable("127.0.0.1:1")
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    with pytest.raises(ValueError, match="drop --workers or unset RAY_ADDRESS"):
        RayExecutor(workers=2)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ExecutionError, match=r"pip install 'robustrank\[ray\]'"):
        create_executor("ray")


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_executor(ray_instance):
    from robustrank.execution.ray_executor import RayExecutor

    return RayExecutor(workers=2)


@pytest.mark.slow
def test_ray_and_local_executors_give_identical_runs(ray_instance, tmp_path):
    with LocalExecutor() as ex:
        local = ex.map(_family(tmp_path / "a"), progress=False)
    finished = []
    with _ray_executor(ray_instance) as ex:
        remote = ex.map(_family(tmp_path / "b"), progress=False, on_done=finished.append)
    assert ray_instance.is_initialized()  # the caller's Ray stays up

    assert [o.name for o in remote] == [o.name for o in local] == [t.name for t in _family(Path())]
    for lo, ro in zip(local, remote):
        assert not lo.reused and not ro.reused
        assert int(ro.worker.rsplit(":", 1)[1]) != os.getpid()  # ran in a Ray worker
        assert ro.run_dir == str(tmp_path / "b" / ro.name)
        assert _no_clock(ro.final) == _no_clock(lo.final), ro.name
        assert _no_clock(ro.evaluation) == _no_clock(lo.evaluation), ro.name
    # the natural run finished training before either fine-tune started (each writes its
    # pid into its lock file when it starts); the driver heard of every run once
    parent = tmp_path / "b" / "fcnn-natural"
    assert sorted(o.name for o in finished) == sorted(o.name for o in remote)
    done = (parent / DONE_FILE).stat().st_mtime_ns
    for child in remote[:2]:
        assert (Path(child.run_dir) / LOCK_FILE).stat().st_mtime_ns >= done
    assert (parent / LOCK_FILE).read_text().strip() == remote[2].worker.rsplit(":", 1)[1]


class _FakeRemote:
    """Stands in for a Ray remote function: records each submission, returns a token."""

    def __init__(self, kind: str, calls: list) -> None:
        self.kind, self.calls = kind, calls

    def options(self, **options):
        assert options["num_cpus"] == 1 and options["retry_exceptions"] is False
        return self

    def remote(self, task, *args):
        token = (self.kind, task.name)
        self.calls.append((token, task.evaluation is not None, args))
        return token


def test_ray_fine_tunes_wait_for_the_parents_training_not_its_evaluation():
    pytest.importorskip("ray")
    from robustrank.execution.ray_executor import RayExecutor

    ex, calls = RayExecutor(workers=2), []
    ex._remote, ex._evaluator = _FakeRemote("train", calls), _FakeRemote("eval", calls)
    tasks = _family(Path("/runs"))
    tasks.append(RunTask(_config("fcnn-pgd"), "/runs/fcnn-pgd", ("/runs/fcnn-natural",)))
    refs, submitted = ex._submit(tasks, dependency_order(tasks))
    by_token = {token: (evaluated, args) for token, evaluated, args in calls}
    # every run trains without its evaluation; a fine-tune's only argument is its parent's
    # training; an evaluation follows its own run's training and carries the spec
    for task in tasks:
        evaluated, args = by_token[("train", task.name)]
        assert not evaluated
        assert args == (() if not task.after else (("train", "fcnn-natural"),))
    for task in tasks[:3]:
        assert by_token[("eval", task.name)] == (True, (("train", task.name),))
    assert ("eval", "fcnn-pgd") not in by_token  # no evaluation asked: training only
    assert refs == [("eval", t.name) for t in tasks[:3]] + [("train", "fcnn-pgd")]
    assert sorted(submitted) == sorted(token for token, _, _ in calls)  # all, to cancel


@pytest.mark.slow
def test_ray_reports_the_worker_error_unchanged(ray_instance):
    task = RunTask(_config(), "/nonexistent-xyz/run")
    with _ray_executor(ray_instance) as ex, pytest.raises(ExecutionError) as err:
        ex.map([task], progress=False)
    message = str(err.value)
    assert message.startswith("run fcnn-natural in /nonexistent-xyz/run: worker ")
    assert "cannot see /nonexistent-xyz" in message and "shared filesystem" in message
    assert "RayTaskError" not in message and "Traceback" not in message


def _kill_when_running(run_dir: Path, killed: list, deadline: float) -> None:
    """SIGKILL the process training in ``run_dir`` (its pid is in the lock file) once it
    has saved a resume state and written its first epoch; record the pid and the history."""
    while time.monotonic() < deadline and not (run_dir / DONE_FILE).exists():
        rows = read_history(run_dir)
        if (run_dir / RESUME_FILE).exists() and len(rows) >= 2:
            pid = int((run_dir / LOCK_FILE).read_text().strip())
            assert pid not in (os.getpid(), 0, 1)
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, rows))
            return
        time.sleep(0.005)


def _slow_run_with_killer(tmp_path: Path):
    """A run slow enough to be killed: its config, its uninterrupted reference (trained
    locally in ``a/``), the run directory ``b/slow`` and a started thread that SIGKILLs
    whoever trains there (:func:`_kill_when_running`, which appends to ``killed``)."""
    config = _config(epochs=8, train_subset=16000)
    for side in "ab":
        (tmp_path / side).mkdir()
    with LocalExecutor() as ex:
        (reference,) = ex.map([RunTask(config, str(tmp_path / "a" / "slow"))], progress=False)
    run_dir = tmp_path / "b" / "slow"
    killed: list = []
    killer = threading.Thread(
        target=_kill_when_running, args=(run_dir, killed, time.monotonic() + 60), daemon=True
    )
    killer.start()
    return config, reference, run_dir, killed, killer


def ray_kill_facts(tmp_path: Path) -> dict:
    """The killed-worker scenario, run by a child driver (see the test below): a Ray
    executor with its own local instance trains the slow run while the killer SIGKILLs the
    worker once; what happened, as JSON-ready facts."""
    from robustrank.execution.ray_executor import RayExecutor

    config, reference, run_dir, killed, killer = _slow_run_with_killer(tmp_path)
    with RayExecutor(workers=2) as ex:  # starts, and at exit stops, a local instance
        (outcome,) = ex.map([RunTask(config, str(run_dir))], progress=False)
    killer.join()
    return {
        "killed": killed,
        "retry_pid": int(outcome.worker.rsplit(":", 1)[1]),
        "lock": (run_dir / LOCK_FILE).read_text().strip(),
        "rows": read_history(run_dir),
        "final": _no_clock(outcome.final),
        "reference": _no_clock(reference.final),
    }


_CHILD_DRIVER = (
    "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
    "import test_execution as t; "
    "print('FACTS ' + json.dumps(t.ray_kill_facts(Path(sys.argv[2]))), flush=True)"
)


def _ray_log_tail(lines: int = 15) -> str:
    """The end of the newest local Ray session's raylet and driver logs (diagnostics)."""
    logs = Path("/tmp/ray/session_latest/logs")
    out = []
    for pattern in ("raylet.out", "python-core-driver-*.log"):
        for path in sorted(logs.glob(pattern))[-1:]:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path}\n" + "\n".join(tail))
    return "\n".join(out) or f"(no Ray logs under {logs})"


def _facts_from_a_child_driver(tmp_path: Path) -> dict:
    """:func:`ray_kill_facts` in a child Python process that is the Ray driver.

    Ray ends its driver with ``_exit(1)`` and no Python traceback when its own processes
    die (the raylet, or an agent it fate-shares with); run in pytest's process, that ends
    the whole suite silently. In a child, a Python error fails the test with its
    traceback; an exit without one (Ray ending the driver) is retried once in a fresh
    directory and instance, and a second one fails the test with both exits and the
    Ray logs."""
    crashes = []
    for attempt in range(2):
        root = tmp_path / f"attempt-{attempt}"
        root.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD_DRIVER, str(Path(__file__).parent), str(root)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        facts = [line for line in proc.stdout.splitlines() if line.startswith("FACTS ")]
        if proc.returncode == 0 and facts:
            return json.loads(facts[-1].removeprefix("FACTS "))
        if "Traceback" in proc.stderr:
            pytest.fail(f"the child driver raised:\n{proc.stderr[-6000:]}")
        crash = f"exit {proc.returncode}, stderr: {proc.stderr[-1500:]}\n{_ray_log_tail()}"
        warnings.warn(f"Ray ended the child driver (attempt {attempt + 1}): {crash}", stacklevel=1)
        crashes.append(crash)
    pytest.fail("Ray ended the child driver twice:\n" + "\n\n".join(crashes))


@pytest.mark.slow
def test_ray_retries_a_killed_worker_and_the_run_resumes(tmp_path):
    pytest.importorskip("ray")
    facts = _facts_from_a_child_driver(tmp_path)

    assert len(facts["killed"]) == 1, "the run finished before the worker could be killed"
    (killed_pid, rows_then), retry_pid = facts["killed"][0], facts["retry_pid"]
    assert retry_pid != killed_pid
    # the retry took the dead worker's lock (released by the OS) and resumed: the rows the
    # resume state covers are kept as written (timings included; a restart from scratch
    # would rewrite them), one row per epoch, and the same numbers as the uninterrupted run
    assert facts["lock"] == str(retry_pid)
    assert facts["rows"][0] == rows_then[0]
    assert [r["epoch"] for r in facts["rows"]] == list(range(9))
    assert facts["final"] == facts["reference"]


def test_a_local_ray_instance_runs_workers_at_normal_priority(monkeypatch):
    """Ray nices workers to 15 by default, which starves runs next to any busy process;
    the executor starts its local instance with worker niceness 0 unless told otherwise."""
    ray = pytest.importorskip("ray")
    from robustrank.execution.ray_executor import RayExecutor

    seen = {}

    def fake_init(**kwargs):
        seen["niceness"] = os.environ.get("RAY_worker_niceness")
        seen["num_cpus"] = kwargs.get("num_cpus")

    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    RayExecutor(workers=2)._ensure_ray()
    assert seen == {"niceness": "0", "num_cpus": 2}

    monkeypatch.setenv("RAY_worker_niceness", "5")  # an explicit choice is kept
    RayExecutor(workers=2)._ensure_ray()
    assert seen["niceness"] == "5"


# --------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_process_and_local_executors_give_identical_runs(tmp_path):
    from robustrank.execution import ProcessExecutor

    with LocalExecutor() as ex:
        local = ex.map(_family(tmp_path / "a"), progress=False)
    finished = []
    with ProcessExecutor(workers=2) as ex:
        parallel = ex.map(_family(tmp_path / "b"), progress=False, on_done=finished.append)
    assert [o.name for o in parallel] == [o.name for o in local]
    pids = {int(o.worker.rsplit(":", 1)[1]) for o in parallel}
    assert os.getpid() not in pids  # ran in worker processes
    for lo, po in zip(local, parallel):
        assert not po.reused and po.run_dir == str(tmp_path / "b" / po.name)
        assert _no_clock(po.final) == _no_clock(lo.final), po.name
        assert _no_clock(po.evaluation) == _no_clock(lo.evaluation), po.name
    assert sorted(o.name for o in finished) == sorted(o.name for o in parallel)
    # the fine-tunes started after the natural run's training had finished
    done = (tmp_path / "b" / "fcnn-natural" / DONE_FILE).stat().st_mtime_ns
    for child in parallel[:2]:
        assert (Path(child.run_dir) / LOCK_FILE).stat().st_mtime_ns >= done
    with ProcessExecutor(workers=2) as ex:  # a second call reuses every run
        again = ex.map(_family(tmp_path / "b"), progress=False)
    assert all(o.reused for o in again)
    assert [_no_clock(o.evaluation) for o in again] == [_no_clock(o.evaluation) for o in local]


class _Pool:
    """Stands in for the process pool: runs nothing, records each submission and returns
    a finished future with a stand-in outcome (that took ``seconds[name]``, default 1)."""

    def __init__(self, seconds=None) -> None:
        self.calls = []
        self.seconds = seconds or {}

    def submit(self, fn, task):
        from concurrent.futures import Future

        from robustrank.execution import RunOutcome

        self.calls.append((task.name, task.evaluation is not None))
        future = Future()
        took = self.seconds.get(task.name, 1.0)
        future.set_result(RunOutcome(task.run_dir, task.name, {}, None, took, "w:1", False))
        return future

    def shutdown(self, **kwargs):
        pass


def test_process_fine_tunes_wait_for_the_parents_training_not_its_evaluation():
    from robustrank.execution import ProcessExecutor

    ex, pool = ProcessExecutor(workers=2), _Pool()
    ex._pool = pool
    tasks = _family(Path("/runs"))
    tasks.append(RunTask(_config("fcnn-pgd"), "/runs/fcnn-pgd", ("/runs/fcnn-natural",)))
    outcomes = ex.map(tasks, progress=False)
    order = [c for c in pool.calls]
    assert order[0] == ("fcnn-natural", False)  # the parent trains first, alone
    trained = [name for name, evaluated in order if not evaluated]
    assert sorted(trained) == sorted(t.name for t in tasks)
    for task in tasks[:3]:  # an evaluation follows its own run's training
        assert order.index((task.name, True)) > order.index((task.name, False))
    assert (tasks[3].name, True) not in order  # no evaluation asked: training only
    # fine-tunes are submitted before the parent's evaluation: they wait for training only
    assert order.index(("fcnn-fgsm", False)) < order.index(("fcnn-natural", True))
    assert [o.name for o in outcomes] == [t.name for t in tasks]
    assert [o.seconds for o in outcomes] == [2.0, 2.0, 2.0, 1.0]  # training + evaluation


def test_process_evaluations_go_longest_training_first():
    from robustrank.execution import ProcessExecutor

    seconds = {"fcnn-natural": 3.0, "fcnn-fgsm": 1.0, "fcnn-l1-1e-2-nuc-1e-2": 7.0}
    ex, pool = ProcessExecutor(workers=1), _Pool(seconds)
    ex._pool = pool
    ex.map(_family(Path("/runs")), progress=False)
    evaluated = [name for name, evaluation in pool.calls if evaluation]
    # every training first (others may wait for it), then the costliest evaluations, so
    # that the short ones fill the cores at the end
    assert [name for name, evaluation in pool.calls[:3]] == [
        "fcnn-natural",
        "fcnn-fgsm",
        "fcnn-l1-1e-2-nuc-1e-2",
    ]
    assert evaluated == ["fcnn-l1-1e-2-nuc-1e-2", "fcnn-natural", "fcnn-fgsm"]


def test_process_executor_refuses_a_run_larger_than_the_pool(tmp_path):
    from robustrank.execution import ProcessExecutor

    with pytest.raises(ValueError, match="at least 1"):
        ProcessExecutor(workers=0)
    task = RunTask(_config(threads=3), str(tmp_path / "big"))
    with ProcessExecutor(workers=2) as ex, pytest.raises(ExecutionError, match="raise --workers"):
        ex.map([task], progress=False)


@pytest.mark.slow
def test_process_executor_names_the_failed_run_and_keeps_the_error_type(tmp_path):
    from robustrank.execution import ProcessExecutor

    run_dir = tmp_path / "fcnn-natural"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(RunError) as err, ProcessExecutor(workers=1) as ex:
        ex.map([RunTask(_config(), str(run_dir))], progress=False)
    assert str(err.value).startswith(f"run fcnn-natural in {run_dir}: ")
    assert "not empty" in str(err.value)


@pytest.mark.slow
def test_a_killed_process_worker_fails_clearly_and_the_run_resumes(tmp_path):
    from robustrank.execution import ProcessExecutor

    config, reference, run_dir, killed, killer = _slow_run_with_killer(tmp_path)
    with ProcessExecutor(workers=1) as ex, pytest.raises(ExecutionError, match="died"):
        ex.map([RunTask(config, str(run_dir))], progress=False)
    killer.join()
    assert len(killed) == 1, "the run finished before the worker could be killed"
    with ProcessExecutor(workers=1) as ex:  # run again: the run resumes
        (outcome,) = ex.map([RunTask(config, str(run_dir))], progress=False)
    assert [r["epoch"] for r in read_history(run_dir)] == list(range(9))
    assert _no_clock(outcome.final) == _no_clock(reference.final)
