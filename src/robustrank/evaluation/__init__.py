"""Robustness evaluation: fooling ratio (Section 5), robust accuracy, eps sweeps, robustness
curves, gradient-masking diagnostics and the run-level evaluation of a trained model.

One module per concept, each building only on the ones above it:

* :mod:`.core` -- the per-example core: clean predictions, the masks of the inputs an
  attack fools, the input checks, and :class:`EvalResult` (the counts, and the fooling
  ratio and robust accuracy they give);
* :mod:`.robustness` -- a model under an attack: :func:`accuracy`, :func:`fooling_ratio`,
  :func:`robust_accuracy`, :func:`evaluate` (every count) and :func:`eps_sweep`;
* :mod:`.results` -- :func:`format_results`, :func:`format_breakdown`,
  :func:`result_paths` and :func:`save_results` (text, JSON, CSV);
* :mod:`.curves` -- robustness curves over eps (:func:`robustness_curve`) and their files
  (:func:`save_curve`);
* :mod:`.certified_curves` -- certified accuracy beside attacked robust accuracy over eps
  (:func:`certified_curve`, :func:`plot_certified_curve`);
* :mod:`.diagnostics` -- the gradient-masking checks (:func:`diagnose`);
* :mod:`.spec` -- the run-level evaluation of a checkpoint (:class:`EvaluationSpec`,
  :func:`evaluate_run`, :func:`cached_evaluation`) and its per-example outcomes
  (:func:`encode_mask`, :func:`decode_mask`);
* :mod:`.signal` -- the cheap robustness signal a multi-fidelity sweep judges a paused
  trial by (:class:`SignalSpec`, :func:`measure_signal`, :func:`stored_signal`);
* :mod:`.certified_runs` -- the run-level certification of a checkpoint
  (:func:`certify_run`, :func:`cached_certification`) and its check against the run's
  attacks (:func:`certificate_conflicts`);
* :mod:`.certification` -- certified robustness: sound lower bounds on the logit margins
  (:func:`certify`, :func:`certified_accuracy`, :func:`margin_bounds`,
  :func:`logit_bounds`) by registered certifiers (``lipschitz``, ``ibp``, ``crown``,
  ``crown-ibp``, ``alpha-crown``; :func:`list_certifiers`), and :func:`certify_sweep` over
  several eps and methods.

Everything listed in ``__all__`` is importable from ``robustrank.evaluation``.
"""

from .certification import (
    CertificationSweep,
    CertResult,
    UnsupportedModelError,
    certified_accuracy,
    certify,
    certify_sweep,
    get_certifier,
    list_certifiers,
    logit_bounds,
    margin_bounds,
    register_certifier,
)
from .certified_curves import CertifiedCurve, certified_curve, plot_certified_curve
from .certified_runs import (
    cached_certification,
    certificate_conflicts,
    certified_key,
    certified_positions,
    certify_run,
)
from .core import EvalResult, fooled_mask, predictions
from .curves import (
    RobustnessCurve,
    confirm_curve,
    curve_paths,
    is_minimal_perturbation,
    robustness_curve,
    save_curve,
)
from .diagnostics import CheckResult, DiagnosticReport, Tolerances, diagnose
from .results import format_breakdown, format_results, result_paths, save_results
from .robustness import (
    PAPER_DEFAULTS,
    AttackName,
    accuracy,
    eps_sweep,
    evaluate,
    fooling_ratio,
    make_attack,
    robust_accuracy,
)
from .signal import SIGNAL_FILE, SignalSpec, measure_signal, save_signal, stored_signal
from .spec import (
    AttackChoice,
    CertificationSpec,
    CurveSpec,
    DiagnosticsSpec,
    EvaluationSpec,
    cached_evaluation,
    decode_mask,
    encode_mask,
    evaluate_run,
    paper_attacks_spec,
)

__all__ = [
    # the core
    "EvalResult",
    "predictions",
    "fooled_mask",
    # a model under an attack
    "AttackName",
    "PAPER_DEFAULTS",
    "make_attack",
    "accuracy",
    "fooling_ratio",
    "robust_accuracy",
    "evaluate",
    "eps_sweep",
    "format_results",
    "format_breakdown",
    "result_paths",
    "save_results",
    # robustness curves
    "RobustnessCurve",
    "robustness_curve",
    "confirm_curve",
    "is_minimal_perturbation",
    "curve_paths",
    "save_curve",
    # gradient-masking diagnostics
    "diagnose",
    "DiagnosticReport",
    "CheckResult",
    "Tolerances",
    # the run-level evaluation
    "AttackChoice",
    "EvaluationSpec",
    "CertificationSpec",
    "CurveSpec",
    "DiagnosticsSpec",
    "evaluate_run",
    "cached_evaluation",
    "paper_attacks_spec",
    "encode_mask",
    "decode_mask",
    # the cheap signal of multi-fidelity sweeps
    "SignalSpec",
    "measure_signal",
    "stored_signal",
    "save_signal",
    "SIGNAL_FILE",
    # certified robustness
    "CertResult",
    "certify",
    "certified_accuracy",
    "margin_bounds",
    "logit_bounds",
    "UnsupportedModelError",
    "register_certifier",
    "list_certifiers",
    "get_certifier",
    "certify_sweep",
    "CertificationSweep",
    "certified_curve",
    "CertifiedCurve",
    "plot_certified_curve",
    # the run-level certification
    "certify_run",
    "cached_certification",
    "certificate_conflicts",
    "certified_key",
    "certified_positions",
]
