"""Verdicts on the paper's claims (Section 5) from the runs' final measurements.

Each run is compared with its natural reference: the natural run it was fine-tuned from
(``init.from_preset``), or else the natural run of its model family. Which runs are
adversarial, regularised or natural is read from their configs (:class:`RunKind`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .summary import RunKind, RunSummary

__all__ = ["Claim", "assess_claims"]

# Layers the paper points at (Section 5): FCNN W1; CNN W1 and W2.
_FOCUS = {"fcnn": ["W1"], "cnn": ["W1", "W2"]}
# Figure 5: the nuclear norm of the CNN's W2 against the same l1 without it.
_NUCLEAR_FAMILY, _NUCLEAR_LAYER = "cnn", "W2"


@dataclass
class Claim:
    """One claim, its verdict and the comparisons behind it (the first line is a count)."""

    claim: str
    verdict: str  # "supported" | "partly supported" | "not supported" | "not measured"
    evidence: list[str] = field(default_factory=list)


@dataclass
class _Tally:
    """Comparisons that agree with a claim (``hits``) out of ``total``; each adds its
    evidence line to ``lines`` (a list that several tallies may share, to keep order)."""

    hits: int = 0
    total: int = 0
    lines: list[str] = field(default_factory=list)

    def add(self, ok: bool, line: str) -> None:
        self.total += 1
        self.hits += ok
        self.lines.append(line)


def _verdict(hits: int, total: int) -> str:
    """``supported`` when every comparison agrees, ``partly supported`` when at least half
    do, ``not supported`` otherwise, ``not measured`` without comparisons."""
    if total == 0:
        return "not measured"
    if hits == total:
        return "supported"
    if 2 * hits >= total:
        return "partly supported"
    return "not supported"


def _pct(new: float, old: float) -> str:
    return f"{new:.3f} vs {old:.3f} ({100 * (new - old) / old:+.1f}%)"


def _missing(*values: float | None) -> bool:
    return any(v is None or math.isnan(v) for v in values)


def _natural_reference(s: RunSummary, runs: dict[str, RunSummary]) -> RunSummary | None:
    """The natural run ``s`` started from, else the first natural run of its family."""
    parent = runs.get(s.parent) if s.parent is not None else None
    if parent is not None and parent.kind == RunKind.natural and parent.family == s.family:
        return parent
    return next(
        (r for r in runs.values() if r.family == s.family and r.kind == RunKind.natural), None
    )


def _pairs(
    runs: dict[str, RunSummary], kind: RunKind
) -> list[tuple[RunSummary, RunSummary, list[str]]]:
    """``(run, natural reference, focus layers)`` for every run of ``kind`` in a focus
    family, families in the paper's order."""
    out = []
    for fam, layers in _FOCUS.items():
        for s in runs.values():
            if s.family != fam or s.kind != kind:
                continue
            nat = _natural_reference(s, runs)
            if nat is not None:
                out.append((s, nat, layers))
    return out


def _claim_adversarial_structure(runs: dict[str, RunSummary]) -> Claim:
    """Claim 1: adversarially trained models have lower effective rank (Eq. 3) and
    sparsity (Eq. 2) in the focus layers than the natural model they started from."""
    tally = _Tally()
    for s, nat, layers in _pairs(runs, RunKind.adversarial):
        for layer in layers:
            for metric, new, old in (
                ("effective rank", s.eff_rank.get(layer), nat.eff_rank.get(layer)),
                ("effective sparsity", s.eff_sparsity.get(layer), nat.eff_sparsity.get(layer)),
            ):
                if _missing(new, old):
                    continue
                ok = new < old
                tally.add(
                    ok,
                    f"{s.preset} {layer} {metric}: {_pct(new, old)} vs {nat.preset} "
                    f"[{'lower' if ok else 'not lower'}]",
                )
    return Claim(
        "Claim 1: adversarial training leads to low-rank and sparse weights",
        _verdict(tally.hits, tally.total),
        [f"{tally.hits} of {tally.total} comparisons show lower values after adversarial training"]
        + tally.lines,
    )


def _fooling_lines(s: RunSummary, nat: RunSummary, tally: _Tally) -> None:
    """One comparison per attack: the regularised model's fooling ratio vs natural."""
    for attack, fr in s.fooling.items():
        old = nat.fooling.get(attack)
        if old is None or fr is None or math.isnan(fr):
            continue
        ok = fr < old
        tally.add(
            ok,
            f"{s.preset} {attack.upper()} fooling ratio {fr:.3f} vs {old:.3f} natural "
            f"[{'lower' if ok else 'not lower'}]",
        )


def _structure_lines(s: RunSummary, nat: RunSummary, layers: list[str], tally: _Tally) -> None:
    """One comparison per focus layer: lower-rank or sparser than after natural training."""
    for layer in layers:
        r, r0 = s.eff_rank.get(layer), nat.eff_rank.get(layer)
        sp, sp0 = s.eff_sparsity.get(layer), nat.eff_sparsity.get(layer)
        if None in (r, r0, sp, sp0):
            continue
        ok = r < r0 or sp < sp0
        tally.add(
            ok,
            f"{s.preset} {layer}: effective rank {_pct(r, r0)}, effective sparsity "
            f"{_pct(sp, sp0)} [{'lower-rank or sparser' if ok else 'neither'}]",
        )


def _claim_regularised_robustness(runs: dict[str, RunSummary]) -> Claim:
    """Claim 2: regularised models (Eqs. 5-8) have lower fooling ratios than natural
    training, and their focus layers did become lower-rank or sparser."""
    lines: list[str] = []  # both tallies append here, run by run
    fooling, structure = _Tally(lines=lines), _Tally(lines=lines)
    for s, nat, layers in _pairs(runs, RunKind.regularised):
        _fooling_lines(s, nat, fooling)
        _structure_lines(s, nat, layers, structure)
    verdict = _verdict(fooling.hits, fooling.total)
    if verdict == "supported" and structure.total and structure.hits < structure.total:
        verdict = "partly supported"
    return Claim(
        "Claim 2: low-rank and sparse weights promote robustness",
        verdict,
        [
            f"{fooling.hits} of {fooling.total} (model, attack) pairs: regularised models have "
            f"lower fooling ratios than natural training",
            f"{structure.hits} of {structure.total} (model, layer) pairs: the regularised layer "
            "is lower-rank or sparser than after natural training",
        ]
        + lines,
    )


def _claim_regularised_autoattack(runs: dict[str, RunSummary]) -> Claim | None:
    """Claim 2 judged under AutoAttack (Croce & Hein, 2020): regularised models have a lower
    AutoAttack fooling ratio at eps than natural training. None without the evaluation."""
    tally = _Tally()
    for s, nat, _ in _pairs(runs, RunKind.regularised):
        fr, old = s.strong.get("fr_autoattack"), nat.strong.get("fr_autoattack")
        if _missing(fr, old):
            continue
        ok = fr < old
        ra, ra_old = s.strong["ra_autoattack"], nat.strong["ra_autoattack"]
        tally.add(
            ok,
            f"{s.preset} AutoAttack fooling ratio {fr:.3f} vs {old:.3f} natural, robust "
            f"accuracy {ra:.3f} vs {ra_old:.3f} [{'lower' if ok else 'not lower'}]",
        )
    if not tally.total:
        return None
    return Claim(
        "Claim 2 under AutoAttack: low-rank and sparse weights promote robustness",
        _verdict(tally.hits, tally.total),
        [
            f"{tally.hits} of {tally.total} regularised models have a lower AutoAttack fooling "
            "ratio than natural training"
        ]
        + tally.lines,
    )


def _nuclear_base(s: RunSummary, runs: dict[str, RunSummary]) -> RunSummary | None:
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


def _claim_nuclear_rank(runs: dict[str, RunSummary]) -> Claim | None:
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
    pairs = [(s, base) for s in nucs if (base := _nuclear_base(s, runs)) is not None]
    pairs = [(s, b) for s, b in pairs if layer in s.eff_rank and layer in b.eff_rank]
    if not pairs:
        return None
    lines = [
        f"{s.preset} {layer} effective rank {_pct(s.eff_rank[layer], b.eff_rank[layer])} "
        f"vs {b.preset} (same l1, no nuclear norm)"
        for s, b in pairs
    ]
    hits = sum(s.eff_rank[layer] < b.eff_rank[layer] for s, b in pairs)
    return Claim(
        f"Nuclear-norm regularisation lowers the effective rank of the CNN's {layer}",
        _verdict(hits, len(pairs)),
        [f"{hits} of {len(pairs)} nuclear-norm settings lower it"] + lines,
    )


def assess_claims(runs: dict[str, RunSummary]) -> list[Claim]:
    """Verdicts on Claim 1 and Claim 2 (Section 5) from the final measurements.

    Claim 1 compares the adversarially fine-tuned models' effective rank and sparsity of
    the layers the paper highlights with those of the natural model they started from.
    Claim 2 compares every regularised model's fooling ratios (all attacks) with the
    natural model's, and checks that its focus layers did become lower-rank or sparser.
    A claim is "supported" when every comparison agrees, "partly supported" when at least
    half do, and "not supported" otherwise. Claim 2 is judged again under AutoAttack when
    the strong evaluation ran, and the CNN's nuclear-norm ablation (Figure 5) is added
    when its runs are present.
    """
    claims = [_claim_adversarial_structure(runs), _claim_regularised_robustness(runs)]
    for extra in (_claim_regularised_autoattack(runs), _claim_nuclear_rank(runs)):
        if extra is not None:
            claims.append(extra)
    return claims
