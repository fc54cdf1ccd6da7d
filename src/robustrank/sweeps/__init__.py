"""Sweeps: many training runs over the lambdas of Eqs. (5)-(7), eps, epochs and seeds.

The paper ends with an open question (Section 6): is there an optimal combination of
sparsity and low rank for robustness? A sweep trains one ordinary run directory per trial
of a search space and reports clean against robust accuracy, the Pareto front, the
effective rank and sparsity of the swept layer, and the mean and 95% t-interval over seeds
of every combination.

* :mod:`.spec` -- the YAML spec (:class:`SweepSpec`, :func:`load_spec`, :func:`list_specs`).
* :mod:`.space` -- dotted config paths (``regularizers.l1.1``).
* :mod:`.registry` / :mod:`.strategies` -- the strategies ``grid``, ``random``,
  ``halving``, ``optuna``.
* :mod:`.fidelity` -- multi-fidelity: the ``fidelity:`` section (:class:`Fidelity`) and
  the rung decisions (:func:`judge_rung`).
* :mod:`.runner` -- :func:`run_sweep`: trial directories, parents, resume.
* :mod:`.table` -- rows, the Pareto front, the summary over seeds.
* :mod:`.outputs` -- figures and ``report.html``.
* :mod:`.status` -- :func:`sweep_status`.

Example::

    from robustrank.sweeps import run_sweep
    result = run_sweep("examples/sweeps/tiny-open-question.yaml", "results/tiny-sweep")
    print(result.comparison.text)
"""

from .fidelity import Fidelity, RungVerdict, judge_rung
from .registry import REGISTRY as _STRATEGIES
from .registry import Strategy, get_strategy, list_strategies, register_strategy
from .runner import SweepError, SweepResult, Trial, plan_trials, run_sweep, trial_id
from .spec import LogUniform, Objective, SpecError, SweepSpec, list_specs, load_spec
from .status import SweepStatus, sweep_status

# The built-in strategies register where they are defined.
from . import strategies  # noqa: F401  isort: skip

#: The strategy names registered on import (``grid``, ``random``, ``halving``, ``optuna``) as a
#: ``StrEnum``; a spec's ``strategy`` accepts any registered name.
StrategyName = _STRATEGIES.choices("StrategyName", module=__name__)

__all__ = [
    "Fidelity",
    "RungVerdict",
    "judge_rung",
    "LogUniform",
    "Objective",
    "SpecError",
    "Strategy",
    "StrategyName",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "SweepStatus",
    "Trial",
    "list_specs",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "load_spec",
    "plan_trials",
    "run_sweep",
    "sweep_status",
    "trial_id",
]
