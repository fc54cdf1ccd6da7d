"""Verdicts on the paper's claims (Section 5): every comparison a difference with a 95%
interval, every verdict read off that interval.

Each run is compared with its natural reference: the natural run it was fine-tuned from
(``init.from_preset``), or else the natural run of its model family; seed ``k`` of one
preset with seed ``k`` of the other. Which runs are adversarial, regularised or natural is
read from their configs (:class:`RunKind`).

A comparison is a :class:`robustrank.stats.Comparison` of ``a - b`` in the claimed
direction:

* fooling ratios and robust accuracies: :func:`robustrank.stats.paired_difference` on the
  per-example outcomes (rows = seeds, columns = the same test inputs), a hierarchical paired
  bootstrap over seeds and inputs, widened to the t-interval of the per-seed differences
  (``conservative=True``; the plain bootstrap undercovers with few seeds). A fooling-ratio
  comparison uses the inputs both models classify correctly under every seed, so both
  ratios share one denominator and every input is paired. Without per-example outcomes
  (no final evaluation) the per-seed fooling ratios are compared over seeds instead;
* effective rank (Eq. 3) and effective sparsity (Eq. 2): :func:`robustrank.stats.
  seed_difference`, the t-interval of the per-seed differences (no interval for one seed).

Its verdict is ``supported`` when the interval excludes 0 in the claimed direction,
``contradicted`` when it excludes 0 in the other, ``inconclusive`` otherwise; a claim's
verdict is :func:`robustrank.stats.summarise` of its comparisons (``not measured`` without
any). No verdict rests on a difference whose interval contains 0.

With one seed a comparison's interval (over the test inputs) covers sampling noise only,
while training noise is larger (the three-seed paper run turned several one-seed verdicts
into inconclusive ones): such a comparison, and its claim, carry
:data:`ONE_SEED_CAVEAT` as ``caveat``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..stats import Comparison, Direction, Verdict, paired_difference, seed_difference, summarise
from .summary import FOCUS_LAYERS, PresetSummary, RunKind, RunSummary, strong_attack_of

__all__ = ["Claim", "assess_claims", "comparison_scale", "BOOTSTRAP", "ONE_SEED_CAVEAT"]

# Figure 5: the nuclear norm of the CNN's W2 against the same l1 without it.
_NUCLEAR_FAMILY, _NUCLEAR_LAYER = "cnn", "W2"
# The paired bootstrap of every comparison: replicates and generator seed (fixed, so a
# report is reproducible).
BOOTSTRAP = {"n_boot": 2000, "seed": 0}
_STRUCTURE = (("eff_rank", "effective rank"), ("eff_sparsity", "effective sparsity"))
_SIGN = {"less": "<", "greater": ">"}
#: Beside every verdict that rests on an interval from one seed (results.json and report).
ONE_SEED_CAVEAT = (
    "one seed: this interval covers test-set sampling noise only, not training noise "
    "(seed-to-seed variation); run --seeds 3 or more"
)


@dataclass
class Claim:
    """One claim, its verdict and the comparisons behind it.

    ``evidence``: the count line (e.g. ``"4 supported, 1 inconclusive, 0 contradicted of
    5 comparisons"``), then one line per comparison.
    """

    claim: str
    verdict: str  # "supported" | "contradicted" | "inconclusive" | "not measured"
    evidence: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Comparisons per verdict, and ``total``."""
        out = {str(v): sum(c.verdict == v for c in self.comparisons) for v in Verdict}
        return {**out, "total": len(self.comparisons)}

    @property
    def caveat(self) -> str | None:
        """The caveats of its comparisons (one seed), distinct and joined; None without."""
        found = dict.fromkeys(c.caveat for c in self.comparisons if c.caveat)
        return "; ".join(found) or None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``claim``, ``verdict``, ``counts``, ``evidence`` and ``comparisons``
        (each :meth:`robustrank.stats.Comparison.to_dict`), and ``caveat`` when a
        comparison has one."""
        out = {
            "claim": self.claim,
            "verdict": self.verdict,
            "counts": self.counts(),
            "evidence": list(self.evidence),
            "comparisons": [c.to_dict() for c in self.comparisons],
        }
        if self.caveat is not None:
            out["caveat"] = self.caveat
        return out


def comparison_scale(c: Comparison) -> str:
    """What a comparison's difference measures (one forest plot per scale): ``"ratio"``
    (fooling ratio, robust accuracy), ``"effective rank"`` or ``"effective sparsity"``."""
    return str(c.details.get("scale", "ratio"))


def _line(c: Comparison) -> str:
    """One evidence line: label, difference, interval, claimed sign, verdict, method."""
    ci = "no interval" if c.ci95 is None else f"95% CI [{c.ci95.lo:+.4f}, {c.ci95.hi:+.4f}]"
    n = f"{c.n_seeds} seed{'s' if c.n_seeds != 1 else ''}"
    if c.n_examples is not None:
        n += f", {c.n_examples} inputs"
    return (
        f"{c.label}: {c.difference:+.4f}, {ci} (claimed {_SIGN[c.direction]} 0; {n}) "
        f"[{c.verdict}]; {c.method}"
    )


def _claim(title: str, comparisons: list[Comparison]) -> Claim:
    """A claim from its comparisons: verdict by :func:`summarise`, counts, one line each."""
    if not comparisons:
        return Claim(title, "not measured", ["no comparison could be made"], [])
    for c in comparisons:
        if c.n_seeds == 1 and c.ci95 is not None:  # an interval over test inputs only
            c.caveat = ONE_SEED_CAVEAT
    claim = Claim(title, str(summarise(comparisons)), [], comparisons)
    n = claim.counts()
    head = (
        f"{n['supported']} supported, {n['inconclusive']} inconclusive, "
        f"{n['contradicted']} contradicted of {n['total']} comparisons"
    )
    claim.evidence = [head] + [_line(c) for c in comparisons]
    return claim


# --------------------------------------------------------------------------- pairing


def _seed_pairs(a: PresetSummary, b: PresetSummary) -> list[tuple[RunSummary, RunSummary]]:
    """Seed ``k`` of ``a`` with seed ``k`` of ``b``, for the seeds both have."""
    by_index = {r.seed_index: r for r in b.runs}
    return [(r, by_index[r.seed_index]) for r in a.runs if r.seed_index in by_index]


def _finite(values: list[float | None]) -> bool:
    return all(v is not None and np.isfinite(v) for v in values)


def _seed_comparison(
    a: PresetSummary, b: PresetSummary, key: str, direction: Direction, label: str, scale: str
) -> Comparison | None:
    """Per-seed metric ``key`` of ``a`` minus ``b``, t-interval over seeds; None when a
    seed lacks it."""
    pairs = _seed_pairs(a, b)
    va, vb = [ra.value(key) for ra, _ in pairs], [rb.value(key) for _, rb in pairs]
    if not pairs or not _finite(va + vb):
        return None
    c = seed_difference(va, vb, direction, label=label)  # type: ignore[arg-type]
    c.details.update(a=a.preset, b=b.preset, metric=key, scale=scale)
    return c


def _aligned(pairs: list[tuple[RunSummary, RunSummary]], subset: str) -> list[tuple[Any, Any]]:
    """The outcomes of ``subset`` of every pair; [] when a run lacks them. Raises when the
    runs were evaluated on different inputs (they could not be paired)."""
    out = []
    for ra, rb in pairs:
        oa, ob = ra.outcomes.get(subset), rb.outcomes.get(subset)
        if oa is None or ob is None:
            return []
        out.append((oa, ob))
    keys = {(o.n, o.seed) for pair in out for o in pair}
    if len(keys) > 1:
        raise ValueError(
            f"the {subset} evaluations used different test subsets {sorted(keys)}; the runs "
            "cannot be paired by input. Re-evaluate them with one evaluation spec (delete "
            "their evaluation.json and run reproduce again)"
        )
    return out


def _outcome_comparison(
    a: PresetSummary,
    b: PresetSummary,
    measure: str,
    attack: str,
    direction: Direction,
    label: str,
) -> Comparison | None:
    """Fooling ratio (``measure="fr"``, paper attacks) or robust accuracy (``"ra"``,
    strong subset) of ``a`` minus ``b``, paired by seed and input; None without outcomes."""
    subset = "paper" if measure == "fr" else "strong"
    outcomes = _aligned(_seed_pairs(a, b), subset)
    if not outcomes or any(attack not in o.fooled for pair in outcomes for o in pair):
        return None
    if measure == "ra":
        xa = np.stack([oa.robust(attack) for oa, _ in outcomes])
        xb = np.stack([ob.robust(attack) for _, ob in outcomes])
    else:
        keep = np.logical_and.reduce([o.correct for pair in outcomes for o in pair])
        if not keep.any():
            return None
        xa = np.stack([oa.fooled[attack][keep] for oa, _ in outcomes])
        xb = np.stack([ob.fooled[attack][keep] for _, ob in outcomes])
    c = paired_difference(xa, xb, direction, label=label, conservative=True, **BOOTSTRAP)
    c.details.update(a=a.preset, b=b.preset, metric=f"{measure}_{attack}", scale="ratio")
    c.details["inputs"] = "correct for both models under every seed" if measure == "fr" else "all"
    return c


def _ratio_comparison(
    a: PresetSummary,
    b: PresetSummary,
    measure: str,
    attack: str,
    direction: Direction,
    label: str,
) -> Comparison | None:
    """Fooling ratio (``measure="fr"``) or robust accuracy (``"ra"``) of ``a`` minus ``b``
    under ``attack``: paired by input when both have per-example outcomes, else over the
    per-seed values of ``<measure>_<attack>``."""
    c = _outcome_comparison(a, b, measure, attack, direction, label)
    if c is None:
        c = _seed_comparison(a, b, f"{measure}_{attack}", direction, label, "ratio")
    return c


# --------------------------------------------------------------------------- references


def _natural_reference(s: PresetSummary, runs: dict[str, PresetSummary]) -> PresetSummary | None:
    """The natural run ``s`` started from, else the first natural run of its family."""
    parent = runs.get(s.parent) if s.parent is not None else None
    if parent is not None and parent.kind == RunKind.natural and parent.family == s.family:
        return parent
    return next(
        (r for r in runs.values() if r.family == s.family and r.kind == RunKind.natural), None
    )


def _pairs(
    runs: dict[str, PresetSummary], kind: RunKind
) -> list[tuple[PresetSummary, PresetSummary, list[str]]]:
    """``(run, natural reference, focus layers)`` for every run of ``kind`` in a focus
    family, families in the paper's order."""
    out = []
    for fam, layers in FOCUS_LAYERS.items():
        for s in runs.values():
            if s.family != fam or s.kind != kind:
                continue
            nat = _natural_reference(s, runs)
            if nat is not None:
                out.append((s, nat, layers))
    return out


def _structure_comparisons(
    s: PresetSummary, nat: PresetSummary, layers: list[str]
) -> list[Comparison]:
    """Effective rank and sparsity of each focus layer of ``s`` minus ``nat`` (claimed
    lower)."""
    out = []
    for layer in layers:
        for prefix, what in _STRUCTURE:
            label = f"{s.preset} vs {nat.preset}, {layer} {what}"
            c = _seed_comparison(s, nat, f"{prefix}_{layer}", "less", label, what)
            if c is not None:
                out.append(c)
    return out


# --------------------------------------------------------------------------- claims


def _claim_adversarial_structure(runs: dict[str, PresetSummary]) -> Claim:
    """Claim 1: adversarially trained models have lower effective rank (Eq. 3) and
    sparsity (Eq. 2) in the focus layers than the natural model they started from."""
    comparisons = []
    for s, nat, layers in _pairs(runs, RunKind.adversarial):
        comparisons += _structure_comparisons(s, nat, layers)
    return _claim("Claim 1: adversarial training leads to low-rank and sparse weights", comparisons)


def _claim_certified_structure(runs: dict[str, PresetSummary]) -> Claim | None:
    """Claim 1 for certified training (IBP, CROWN-IBP): the focus layers of certified-trained
    models have lower effective rank and sparsity than the natural model they started
    from. None without such runs."""
    comparisons = []
    for s, nat, layers in _pairs(runs, RunKind.certified):
        comparisons += _structure_comparisons(s, nat, layers)
    if not comparisons:
        return None
    return _claim(
        "Claim 1, certified training: certified training leads to low-rank and sparse weights",
        comparisons,
    )


def _claim_regularised_robustness(runs: dict[str, PresetSummary]) -> Claim:
    """Claim 2: every regularised model (Eqs. 5-8) has a lower fooling ratio than natural
    training under every paper attack."""
    comparisons = []
    for s, nat, _ in _pairs(runs, RunKind.regularised):
        for attack in s.runs[0].fooling:
            label = f"{s.preset} vs {nat.preset}, {attack.upper()} fooling ratio"
            c = _ratio_comparison(s, nat, "fr", attack, "less", label)
            if c is not None:
                comparisons.append(c)
    return _claim("Claim 2: low-rank and sparse weights promote robustness", comparisons)


def _claim_regularised_structure(runs: dict[str, PresetSummary]) -> Claim:
    """Claim 2's premise: the regularisers do make the focus layers lower-rank and
    sparser than natural training (Figures 2 and 5)."""
    comparisons = []
    for s, nat, layers in _pairs(runs, RunKind.regularised):
        comparisons += _structure_comparisons(s, nat, layers)
    return _claim(
        "Claim 2, premise: the regularised models' focus layers are lower-rank and sparser "
        "than after natural training",
        comparisons,
    )


def _claim_regularised_strong(runs: dict[str, PresetSummary]) -> Claim | None:
    """Claim 2 judged under the strong attack of the final evaluation (AutoAttack, Croce &
    Hein, 2020, in every bundled profile): regularised models have a higher robust
    accuracy under it at eps than natural training. None without the evaluation."""
    from ..attacks import get_attack

    attack = strong_attack_of(runs.values())
    if attack is None:
        return None
    name = get_attack(attack).title
    comparisons = []
    for s, nat, _ in _pairs(runs, RunKind.regularised):
        label = f"{s.preset} vs {nat.preset}, {name} robust accuracy"
        c = _ratio_comparison(s, nat, "ra", attack, "greater", label)
        if c is not None:
            comparisons.append(c)
    if not comparisons:
        return None
    title = f"Claim 2 under {name}: low-rank and sparse weights promote robustness"
    return _claim(title, comparisons)


def _claim_exact_robustness(runs: dict[str, PresetSummary]) -> Claim | None:
    """Claim 2 with exact structure: every exact-structure model (``structure:``, pruned or
    factorised to an exact density or rank) is more robust than natural training, under
    the strong attack when it ran, else under every paper attack. None without such runs."""
    from ..attacks import get_attack

    strong = strong_attack_of(runs.values())
    comparisons = []
    for s, nat, _ in _pairs(runs, RunKind.structured):
        if strong is not None:
            label = f"{s.preset} vs {nat.preset}, {get_attack(strong).title} robust accuracy"
            found = [_ratio_comparison(s, nat, "ra", strong, "greater", label)]
        else:
            found = [
                _ratio_comparison(
                    s,
                    nat,
                    "fr",
                    a,
                    "less",
                    f"{s.preset} vs {nat.preset}, {a.upper()} fooling ratio",
                )
                for a in s.runs[0].fooling
            ]
        comparisons += [c for c in found if c is not None]
    if not comparisons:
        return None
    return _claim(
        "Claim 2 with exact structure: exact low rank and sparsity promote robustness", comparisons
    )


def _certified_comparison(
    a: PresetSummary, b: PresetSummary, key: str, label: str
) -> Comparison | None:
    """Certified accuracy ``key`` (``certified_key(method, eps)``) of ``a`` minus ``b``,
    paired by seed and input (claimed higher); None without both certifications."""
    outcomes = _aligned(_seed_pairs(a, b), "certified")
    if not outcomes or any(key not in o.certified for pair in outcomes for o in pair):
        return None
    xa = np.stack([oa.certified[key] for oa, _ in outcomes])
    xb = np.stack([ob.certified[key] for _, ob in outcomes])
    c = paired_difference(xa, xb, "greater", label=label, conservative=True, **BOOTSTRAP)
    c.details.update(a=a.preset, b=b.preset, metric=f"ca_{key}", scale="ratio", inputs="all")
    return c


def _claim_certified(runs: dict[str, PresetSummary]) -> Claim | None:
    """Claim 2 under certification: every regularised or exact-structure model has a higher
    certified accuracy (a proven lower bound on robust accuracy) than the natural model it
    is compared with, at every certified eps, with the tightest certificate (``best``:
    certified by any of the certifiers, or the only one). None without certifications."""
    comparisons = []
    for kind in (RunKind.regularised, RunKind.structured):
        for s, nat, _ in _pairs(runs, kind):
            certified = s.runs[0].outcomes.get("certified")
            if certified is None:
                continue
            keys = [k for k in certified.certified if k.startswith("best@")]
            keys = keys or list(certified.certified)  # a single certifier has no "best"
            for key in keys:
                method, eps = key.split("@")
                label = f"{s.preset} vs {nat.preset}, certified accuracy ({method}) at eps {eps}"
                c = _certified_comparison(s, nat, key, label)
                if c is not None:
                    comparisons.append(c)
    if not comparisons:
        return None
    return _claim(
        "Claim 2, certified: low-rank and sparse weights raise certified accuracy", comparisons
    )


def _claim_twins(runs: dict[str, PresetSummary], twins: dict[str, str]) -> Claim | None:
    """Each exact-structure twin against the regularised row whose effective rank or
    sparsity it matches (``twins``: twin preset -> regularised preset): a higher robust
    accuracy (strong attack) or lower fooling ratios is "supported", a lower robustness
    "contradicted", a difference inside the noise "inconclusive". None without twins."""
    from ..attacks import get_attack

    strong = strong_attack_of(runs.values())
    comparisons = []
    for twin, row in twins.items():
        a, b = runs.get(twin), runs.get(row)
        if a is None or b is None:
            continue
        if strong is not None:
            label = f"{twin} vs {row} (its penalty), {get_attack(strong).title} robust accuracy"
            found = [_ratio_comparison(a, b, "ra", strong, "greater", label)]
        else:
            found = [
                _ratio_comparison(
                    a, b, "fr", x, "less", f"{twin} vs {row}, {x.upper()} fooling ratio"
                )
                for x in a.runs[0].fooling
            ]
        comparisons += [c for c in found if c is not None]
    if not comparisons:
        return None
    return _claim(
        "Exact twins: exact rank or sparsity is more robust than the penalty that reached it",
        comparisons,
    )


def _nuclear_base(s: PresetSummary, runs: dict[str, PresetSummary]) -> PresetSummary | None:
    """The run that differs from ``s`` only by having no nuclear norm: same family,
    parent, l1 and joint lambdas."""
    return next(
        (
            b
            for b in runs.values()
            if b.kind == RunKind.regularised
            and not b.nuclear
            and (b.family, b.parent, b.l1, b.joint) == (s.family, s.parent, s.l1, s.joint)
        ),
        None,
    )


def _claim_nuclear_rank(runs: dict[str, PresetSummary]) -> Claim | None:
    """The nuclear-norm observation on the CNN (Figure 5): adding the nuclear norm of W2
    (Eq. 6) to the same l1 lowers W2's effective rank. None without such runs."""
    layer = _NUCLEAR_LAYER
    nucs = sorted(
        (
            s
            for s in runs.values()
            if s.family == _NUCLEAR_FAMILY and s.kind == RunKind.regularised and s.nuclear
        ),
        key=lambda s: sum(s.nuclear.values()),
    )
    comparisons = []
    for s in nucs:
        base = _nuclear_base(s, runs)
        if base is None:
            continue
        label = f"{s.preset} vs {base.preset} (same l1, no nuclear norm), {layer} effective rank"
        c = _seed_comparison(s, base, f"eff_rank_{layer}", "less", label, "effective rank")
        if c is not None:
            comparisons.append(c)
    if not comparisons:
        return None
    return _claim(
        f"Nuclear-norm regularisation lowers the effective rank of the CNN's {layer}", comparisons
    )


def assess_claims(
    runs: dict[str, PresetSummary], twins: dict[str, str] | None = None
) -> list[Claim]:
    """Verdicts on Claim 1 and Claim 2 (Section 5), each from comparisons with intervals.

    Claim 1 compares the adversarially fine-tuned models' effective rank and sparsity of
    the layers the paper highlights with those of the natural model they started from.
    Claim 2 compares every regularised model's fooling ratio under every paper attack with
    the natural model's; its premise, that the regularised focus layers are lower-rank and
    sparser, is a claim of its own. Claim 2 is judged again under the strong attack
    (AutoAttack's robust accuracy in the bundled profiles) when the strong evaluation
    ran, and the CNN's nuclear-norm ablation (Figure 5) is added when its runs are
    present. With exact-structure runs (``structure:``), Claim 2 is judged for them too,
    and each twin named in ``twins`` (twin preset -> regularised preset) is compared with
    its regularised row. When the runs were certified, Claim 2 is judged on certified
    accuracy as well (:func:`_claim_certified`).
    """
    claims = [
        _claim_adversarial_structure(runs),
        _claim_regularised_robustness(runs),
        _claim_regularised_structure(runs),
    ]
    extras = (
        _claim_regularised_strong(runs),
        _claim_nuclear_rank(runs),
        _claim_exact_robustness(runs),
        _claim_twins(runs, twins or {}),
        _claim_certified(runs),
        _claim_certified_structure(runs),
    )
    for extra in extras:
        if extra is not None:
            claims.append(extra)
    return claims
