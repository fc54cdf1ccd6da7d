"""End to end: the tiny reproduce profile with two seeds writes every artefact, its numbers
are means and t-intervals over the seeds' own runs, its verdicts follow the intervals, and
the report is valid.

The HTML report is checked twice: structurally (it parses, references nothing external,
every embedded image is a PNG that decodes) and in headless Chromium, when a ``chromium``
binary is installed (``.ci/run`` installs the Debian package; elsewhere the browser test
is skipped with a reason).
"""

import base64
import csv
import io
import json
import shutil
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from headless import needs_chromium, probe_page
from robustrank.data import eval_subset, load_dataset
from robustrank.evaluation import certify, decode_mask
from robustrank.experiments.claims import ONE_SEED_CAVEAT
from robustrank.experiments.figures import _mi_record
from robustrank.experiments.reproduce import (
    REPRODUCE_DIR,
    ProfileName,
    ReproduceError,
    _check_out_dir,
    load_profile,
    profile_configs,
    reproduce,
    seeded_runs,
)
from robustrank.experiments.summary import RunKind, run_kind, table_attacks
from robustrank.models import load_checkpoint
from robustrank.training import HistoryConfig, config_from_dict, list_presets, load_preset, train

# Student's t quantile t_{0.975, 1} (tabulated; e.g. Abramowitz & Stegun, Table 26.10).
T975_DF1 = 12.706204736174707
VERDICTS = {"supported", "contradicted", "inconclusive"}


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.links, self.stack = [], 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table":
            self.tables += 1
        if tag in ("link", "script") or (tag == "a" and not attrs.get("href", "#").startswith("#")):
            self.links.append((tag, attrs))
        if tag not in ("img", "meta", "br", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


def _stamps(out, pattern):
    return {p: p.stat().st_mtime_ns for p in sorted(out.glob(pattern))}


def _seed0_stamps(out):
    """done.json, evaluation.json and certification.json of every seed-0 run."""
    names = ("done.json", "evaluation.json", "certification.json")
    return {p: t for name in names for p, t in _stamps(out, f"runs/*/seed-0/{name}").items()}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny profile with one seed, then the same OUT with two seeds (``one_files``:
    the one-seed results.json and reports, which the two-seed run overwrites)."""
    out = tmp_path_factory.mktemp("repro") / "tiny"
    one = reproduce("tiny", out, progress=False, seeds=1)
    stamps = _seed0_stamps(out)
    one_files = {n: (out / n).read_text() for n in ("results.json", "report.html", "report.md")}
    two = reproduce("tiny", out, progress=False, seeds=2)
    return SimpleNamespace(one=one, two=two, stamps=stamps, one_files=one_files)


@pytest.fixture(scope="module")
def tiny(tiny_runs):
    return tiny_runs.two


def _results(result):
    return json.loads((result.out_dir / "results.json").read_text())


def _evaluation(out, preset, k):
    return json.loads((out / "runs" / preset / f"seed-{k}" / "evaluation.json").read_text())[
        "result"
    ]


@pytest.mark.slow
def test_tiny_profile_writes_every_artefact(tiny):
    out = tiny.out_dir
    for name in (
        "report.html",
        "report.md",
        "results.json",
        "history.csv",
        "tables/table1.csv",
        "tables/table2.csv",
        "theory/theory.json",
        "theory/theory.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    configs = profile_configs(load_profile("tiny"))
    for c in configs:
        for k in (0, 1):
            assert (out / "runs" / c.name / f"seed-{k}" / "final.safetensors").is_file()
        assert sorted(p.name for p in (out / "runs" / c.name).iterdir()) == ["seed-0", "seed-1"]
    # the fooling-ratio columns are the configs' history attacks
    assert tiny.attacks == table_attacks(configs) == ["fgsm", "pgd", "gnm"]
    for key in ("table1", "table2"):
        rows = list(csv.DictReader(io.StringIO((out / "tables" / f"{key}.csv").read_text())))
        assert rows
        for row in rows:
            ours, paper = float(row["test_acc_mean"]), float(row["paper"])
            assert 0.0 <= ours <= 1.0 and 0.0 < paper < 1.0 and row["n_seeds"] == "2"
            assert float(row["difference"]) == pytest.approx(ours - paper)
            for m in [f"fr_{a}" for a in tiny.attacks] + ["ra_pgd", "ra_autoattack"]:
                mean, lo, hi = (float(row[f"{m}_{x}"]) for x in ("mean", "ci_lo", "ci_hi"))
                assert 0.0 <= mean <= 1.0 and lo <= mean <= hi
                w_lo, w_hi = float(row[f"{m}_wilson_lo"]), float(row[f"{m}_wilson_hi"])
                assert 0.0 <= w_lo <= w_hi <= 1.0
                assert row[m].startswith(f"{mean:.3f} ± ") and "[±" in row[m]
    results = _results(tiny)
    assert set(results["runs"]) == {c.name for c in configs} and results["seeds"] == 2
    for fig in results["figures"]:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(f.startswith("figures/claims/") for f in results["figures"])


@pytest.mark.slow
def test_seed_k_trains_with_base_seed_plus_k_in_its_own_directory(tiny):
    runs = tiny.out_dir / "runs"
    for c in profile_configs(load_profile("tiny")):
        for k in (0, 1):
            saved = yaml.safe_load((runs / c.name / f"seed-{k}" / "config.yaml").read_text())
            assert saved["seed"] == c.seed + k
            if c.init.from_preset:
                assert saved["init"]["preset_run"] == f"../../{c.init.from_preset}/seed-{k}"
            else:
                assert saved["init"]["preset_run"] is None


@pytest.mark.slow
def test_fine_tunes_start_from_the_final_weights_of_the_same_seed(tiny, tmp_path):
    # Retrain seed 1 of a fine-tune from its parent's seed-1 final weights, given as an
    # explicit checkpoint: the weights must come out identical (training is deterministic).
    runs = tiny.out_dir / "runs"
    fine_tune, parent = "fcnn-l1-1e-2-nuc-1e-2", "fcnn-natural"
    saved = yaml.safe_load((runs / fine_tune / "seed-1" / "config.yaml").read_text())
    start = runs / parent / "seed-1" / "final.safetensors"
    saved["init"] = {"checkpoint": str(start)}
    train(config_from_dict(saved), tmp_path / "again", progress=False)
    again = load_file(tmp_path / "again" / "final.safetensors")
    ours = load_file(runs / fine_tune / "seed-1" / "final.safetensors")
    other_seed = load_file(runs / fine_tune / "seed-0" / "final.safetensors")
    assert again.keys() == ours.keys()
    assert all(torch.equal(again[k], ours[k]) for k in ours)
    assert not all(torch.equal(other_seed[k], ours[k]) for k in ours)
    seed0_parent = load_file(runs / parent / "seed-0" / "final.safetensors")
    assert not all(torch.equal(seed0_parent[k], load_file(start)[k]) for k in seed0_parent)


@pytest.mark.slow
def test_going_from_one_to_two_seeds_trains_only_the_new_seed(tiny_runs):
    out = tiny_runs.two.out_dir
    # seed-0 done.json, evaluation.json and certification.json of every preset
    assert {p.name for p in tiny_runs.stamps} == {
        "done.json",
        "evaluation.json",
        "certification.json",
    }
    assert _seed0_stamps(out) == tiny_runs.stamps
    assert all(p.n_seeds == 1 for p in tiny_runs.one.runs.values())
    assert all(p.n_seeds == 2 for p in tiny_runs.two.runs.values())
    # seed 0 is the same run in both: its per-seed numbers did not change
    for name, p in tiny_runs.one.runs.items():
        assert tiny_runs.two.runs[name].runs[0].to_dict() == p.runs[0].to_dict()
    assert json.loads((out / "profile.json").read_text())["seeds"] == 2


@pytest.mark.slow
def test_one_seed_verdicts_say_they_cover_sampling_noise_only(tiny_runs):
    # one seed: every comparison with an interval (over test inputs only) and its claim
    # carry the caveat, in results.json and beside the verdict in both reports
    one = json.loads(tiny_runs.one_files["results.json"])
    with_ci = [c for cl in one["claims"] for c in cl["comparisons"] if c["ci95"] is not None]
    assert with_ci, "the tiny profile's fooling-ratio comparisons have intervals"
    assert all(c["n_seeds"] == 1 and c["caveat"] == ONE_SEED_CAVEAT for c in with_ci)
    for claim in one["claims"]:
        has = any("caveat" in c for c in claim["comparisons"])
        assert claim.get("caveat") == (ONE_SEED_CAVEAT if has else None), claim["claim"]
        no_ci = [c for c in claim["comparisons"] if c["ci95"] is None]
        assert all("caveat" not in c and c["verdict"] == "inconclusive" for c in no_ci)
    for name in ("report.html", "report.md"):
        text = tiny_runs.one_files[name]
        assert text.count(ONE_SEED_CAVEAT) >= len(with_ci), name
    assert "caveat" in tiny_runs.one_files["report.md"].split("## Claims")[1].split("\n## ")[0]
    # two seeds: the same results.json fields, no caveat anywhere
    two = _results(tiny_runs.two)
    assert ONE_SEED_CAVEAT not in json.dumps(two)
    for name in ("report.html", "report.md"):
        assert "one seed:" not in (tiny_runs.two.out_dir / name).read_text(), name
    for c1, c2 in zip(one["claims"], two["claims"]):
        assert set(c1) - {"caveat"} == set(c2)
        for a, b in zip(c1["comparisons"], c2["comparisons"]):
            assert set(a) - {"caveat"} == set(b)


@pytest.mark.slow
def test_results_json_metrics_are_means_and_t_intervals_of_the_seed_runs(tiny):
    out, results = tiny.out_dir, _results(tiny)
    for name, run in results["runs"].items():
        metrics = run["metrics"]
        # per-seed values from each seed's own files (evaluation.json, history.jsonl)
        evs = [_evaluation(out, name, k) for k in (0, 1)]
        lasts = [
            json.loads(
                (out / "runs" / name / f"seed-{k}" / "history.jsonl").read_text().splitlines()[-1]
            )
            for k in (0, 1)
        ]
        expected = {
            "fr_pgd": [
                e["paper_attacks"]["pgd"]["n_fooled"] / e["paper_attacks"]["pgd"]["n_correct"]
                for e in evs
            ],
            "ra_autoattack": [e["autoattack"]["n_robust"] / e["autoattack"]["n"] for e in evs],
            "eff_rank_W1": [last["eff_rank_W1"] for last in lasts],
            "test_acc": [last["test_acc"] for last in lasts],
        }
        for key, values in expected.items():
            m = metrics[key]
            assert m["per_seed"] == pytest.approx(values) and m["n_seeds"] == 2
            a, b = values
            half = T975_DF1 * abs(a - b) / 2  # t * s / sqrt(2), s = |a - b| / sqrt(2)
            assert m["mean"] == pytest.approx((a + b) / 2)
            assert m["ci95"] == pytest.approx([(a + b) / 2 - half, (a + b) / 2 + half], abs=1e-12)
        for key in ("fr_pgd", "ra_autoattack"):
            for v, (lo, hi) in zip(metrics[key]["per_seed"], metrics[key]["wilson95"]):
                assert lo <= v <= hi and 0.0 <= lo < hi <= 1.0


@pytest.mark.slow
def test_results_json_schema_and_no_verdict_rests_on_an_interval_containing_zero(tiny):
    results = _results(tiny)
    assert results["schema"] == 2
    for run in results["runs"].values():
        assert run["n_seeds"] == 2 and len(run["per_seed"]) == 2
        for key, m in run["metrics"].items():
            assert {"mean", "ci95", "n_seeds", "per_seed"} <= set(m), key
            assert len(m["per_seed"]) == m["n_seeds"] == 2
            assert m["ci95"] is None or (len(m["ci95"]) == 2 and m["ci95"][0] <= m["ci95"][1])
            if key.startswith(("fr_", "ra_")):
                assert len(m["wilson95"]) == 2
    assert len(results["claims"]) >= 4
    for claim in results["claims"]:
        verdicts = [c["verdict"] for c in claim["comparisons"]]
        counts = claim["counts"]
        assert counts["total"] == len(verdicts) == sum(counts[v] for v in VERDICTS)
        for c in claim["comparisons"]:
            assert {"difference", "ci95", "verdict", "direction", "method"} <= set(c)
            assert {"n_seeds", "n_examples", "p_value", "label"} <= set(c)
            assert c["n_seeds"] == 2 and c["verdict"] in VERDICTS
            ci = c["ci95"]
            if ci is None or ci[0] <= 0.0 <= ci[1]:
                assert c["verdict"] == "inconclusive", c["label"]
            else:
                claimed = (ci[1] < 0) == (c["direction"] == "less")
                assert c["verdict"] == ("supported" if claimed else "contradicted"), c["label"]
            if c["details"].get("scale") == "ratio":
                assert "conservative" in c["method"] or "widened" in c["method"]
        if not verdicts:
            assert claim["verdict"] == "not measured"
        elif "contradicted" in verdicts:
            assert claim["verdict"] == "contradicted"
        elif set(verdicts) == {"supported"}:
            assert claim["verdict"] == "supported"
        else:
            assert claim["verdict"] == "inconclusive"


@pytest.mark.slow
def test_final_evaluation_records_aligned_per_example_outcomes(tiny):
    out = tiny.out_dir
    spec = load_profile("tiny").evaluation
    index = torch.arange(10000)
    paper_idx = set(eval_subset(index, index, spec.paper_n, spec.seed)[0].tolist())
    strong_idx = set(eval_subset(index, index, spec.n, spec.seed)[0].tolist())
    assert strong_idx < paper_idx  # nested: the AutoAttack inputs are paper-attack inputs
    datasets = {}
    for c in seeded_runs(profile_configs(load_profile("tiny")), 2):
        ev = _evaluation(out, c.preset, c.index)
        outcomes = ev["outcomes"]
        assert (outcomes["paper"]["n"], outcomes["strong"]["n"]) == (spec.paper_n, spec.n)
        paper = outcomes["paper"]
        correct = decode_mask(paper["correct"], spec.paper_n)
        for attack, res in ev["paper_attacks"].items():
            fooled = decode_mask(paper["fooled"][attack], spec.paper_n)
            assert res["early_stop"] and res["n"] == spec.paper_n
            assert int(fooled.sum()) == res["n_fooled"] and not (fooled & ~correct).any()
            assert int(correct.sum()) == res["n_correct"]
        # the mask is the model's own correctness on the seeded subset, whatever the run seed
        name = c.config.dataset.name
        if name not in datasets:
            x_all, y_all = load_dataset(c.config.dataset, "test")
            datasets[name] = eval_subset(x_all, y_all, spec.paper_n, spec.seed)
        x, y = datasets[name]
        model, _ = load_checkpoint(out / "runs" / c.rel_dir / "final.safetensors")
        with torch.no_grad():
            pred = model.eval()(x).argmax(1)
        assert np.array_equal((pred == y).numpy(), correct)
        strong = outcomes["strong"]
        robust = decode_mask(strong["correct"], spec.n) & ~decode_mask(
            strong["fooled"]["autoattack"], spec.n
        )
        assert int(robust.sum()) == ev["autoattack"]["n_robust"]


@pytest.mark.slow
def test_tiny_profile_evaluates_every_model_with_autoattack_curves_and_diagnostics(tiny):
    out = tiny.out_dir
    results = _results(tiny)
    for name, per_seed in results["evaluations"].items():
        assert len(per_seed) == 2
        for k, ev in enumerate(per_seed):
            assert (out / "runs" / name / f"seed-{k}" / "evaluation.json").is_file()
            assert "outcomes" not in ev  # the masks stay in the run directory
            pgd, aa = ev["pgd"], ev["autoattack"]
            assert pgd["n"] == aa["n"] == 60 and pgd["n_correct"] == aa["n_correct"]
            # the ensemble contains APGD-CE, so it is never weaker than PGD-20 by more than
            # the inputs APGD-CE misses and PGD finds; on these models it is at least as strong
            assert aa["robust_accuracy"] <= pgd["robust_accuracy"] + 2 / 60
            parts = aa["details"]["components"]
            assert sum(p["n_broken"] for p in parts) == aa["n_fooled"]
            curve = ev["curve"]
            ra = curve["robust_accuracy"]
            assert all(b <= a for a, b in zip(ra, ra[1:])) and curve["eps"][0] == 0.0
            # the worst case at eps folds AutoAttack in: never above its robust accuracy
            folded = [c for c in curve["confirmations"] if c["attack"] == "autoattack"]
            assert folded[0]["robust_accuracy"] <= aa["robust_accuracy"] + 1e-12
            assert {c["name"] for c in ev["diagnostics"]["checks"]} >= {"black-box", "large-eps"}
    for key in ("table1", "table2"):
        for row in tiny.tables[key]:
            per_seed = [
                ev["autoattack"]["robust_accuracy"] for ev in results["evaluations"][row["preset"]]
            ]
            assert row["ra_autoattack_mean"] == pytest.approx(sum(per_seed) / 2)
    md = tiny.report_md.read_text()
    assert "RA AutoAttack" in md and "Diagnostics: fcnn-natural" in md
    assert "Robustness curves of the final FCNN models" in md
    assert any(c.claim.startswith("Claim 2 under AutoAttack") for c in tiny.claims)


@pytest.mark.slow
def test_tiny_profile_certifies_every_model_on_the_strong_inputs(tiny):
    """Each run's certified masks are the certifier's own on the strong subset, never
    contain an input an attack broke, and feed the certified table and claim."""
    out, spec = tiny.out_dir, load_profile("tiny").evaluation
    cert_spec = spec.certification
    assert cert_spec.methods == ["ibp", "crown-ibp"] and cert_spec.eps == [0.01, 0.05]
    for c in seeded_runs(profile_configs(load_profile("tiny")), 2):
        saved = json.loads((out / "runs" / c.rel_dir / "certification.json").read_text())
        cert = saved["result"]
        assert (cert["n"], cert["seed"], cert["positions"]) == (spec.n, spec.seed, list(range(60)))
        x_all, y_all = load_dataset(c.config.dataset, "test")
        x, y = eval_subset(x_all, y_all, spec.n, spec.seed)
        model, _ = load_checkpoint(out / "runs" / c.rel_dir / "final.safetensors")
        ev = _evaluation(out, c.preset, c.index)
        fooled = decode_mask(ev["outcomes"]["strong"]["fooled"]["autoattack"], spec.n)
        for row in cert["results"]:
            mask = decode_mask(row["certified"], spec.n)
            direct = certify(model, x, y, row["eps"], row["method"]).certified.numpy()
            assert np.array_equal(mask, direct) and int(mask.sum()) == row["n_certified"]
            if row["eps"] >= ev["autoattack"]["eps"]:
                assert not (mask & fooled).any()
        first = tiny.runs[c.preset].runs[c.index]
        assert "certified" in first.outcomes and not any(
            w.startswith("certified-but-broken") for w in first.diagnostic_warnings or []
        )
    rows = {r["preset"]: r for r in tiny.tables["certified"]}
    assert set(rows) == set(tiny.runs)
    for name, row in rows.items():
        per_seed = [r.certified["ca_best@0.01"] for r in tiny.runs[name].runs]
        assert row["ca_best@0.01_mean"] == pytest.approx(sum(per_seed) / 2)
        assert row["ca_ibp@0.01_mean"] <= row["ca_best@0.01_mean"]
        for r in tiny.runs[name].runs:  # the sandwich: certified <= attacked, at 0.05
            assert r.certified["ca_best@0.05"] <= r.certified["ra_curve@0.05"]
    csv_rows = list(csv.DictReader(io.StringIO((out / "tables" / "certified.csv").read_text())))
    assert [r["preset"] for r in csv_rows] == list(rows)
    claim = next(c for c in tiny.claims if c.claim.startswith("Claim 2, certified"))
    regularised = [p for p in tiny.runs.values() if p.kind == RunKind.regularised]
    assert len(claim.comparisons) == 2 * len(regularised)  # every eps of each
    assert all(c.n_seeds == 2 and c.n_examples == spec.n for c in claim.comparisons)
    assert "Certified robustness" in tiny.report_md.read_text()


@pytest.mark.slow
def test_report_html_is_self_contained_and_images_decode(tiny):
    text = tiny.report_html.read_text()
    parser = _Collector()
    parser.feed(text)
    assert parser.stack == []
    assert parser.links == []  # no external stylesheets, scripts or links
    assert "http://" not in text and "https://" not in text
    assert parser.tables >= 2
    assert len(parser.images) == len(tiny.figures)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width > 50 and height > 50
    md = tiny.report_md.read_text()
    assert "Table 1" in md and "Claim 1" in md and "95% interval" in md
    assert all(f"FR {a.upper()}" in md for a in tiny.attacks)
    # every comparison of every claim is in the report, with its verdict
    for claim in tiny.claims:
        for c in claim.comparisons:
            assert c.label in md


_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.setAttribute("data-probe", JSON.stringify(
    imgs.map((i) => [i.complete, i.naturalWidth, i.naturalHeight])));
});
</script>"""


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_headless_chromium_and_every_image_loads(tiny, tmp_path):
    # The report unchanged, plus a probe script that records each image's load state.
    page = tmp_path / "report.html"
    shutil.copy(tiny.report_html, page)
    probe, dom = probe_page(page, _PROBE, tmp_path / "profile")
    assert len(probe) == len(tiny.figures) > 0
    for complete, width, height in probe:
        assert complete and width > 50 and height > 50
    assert "<table" in dom and "Claim 1" in dom


@pytest.mark.slow
def test_second_call_reuses_finished_runs(tiny):
    pattern = "runs/*/seed-*/final.safetensors"
    before = _stamps(tiny.out_dir, pattern)
    again = reproduce("tiny", tiny.out_dir, progress=False, seeds=2)
    assert _stamps(tiny.out_dir, pattern) == before and len(before) == 14
    assert again.tables == tiny.tables


@pytest.mark.slow
def test_other_profile_into_same_dir_is_refused(tiny):
    with pytest.raises(ReproduceError, match="profile 'tiny'"):
        reproduce("quick", tiny.out_dir, progress=False)


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ReproduceError, match="not empty"):
        reproduce("tiny", tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("marked", [True, False])
def test_runs_of_the_layout_before_seeds_are_refused(tmp_path, marked):
    run = tmp_path / "runs" / "fcnn-natural"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: fcnn-natural\n")
    if marked:
        (tmp_path / "profile.json").write_text(json.dumps({"profile": "tiny"}))
    with pytest.raises(ReproduceError, match="earlier layout.*seed-<k>.*delete them yourself"):
        reproduce("tiny", tmp_path, progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    # --overwrite deletes only directories robustrank marked as its own: these have no
    # marker (checked without training: the directory step alone)
    prof = load_profile("tiny")
    with pytest.raises(ReproduceError, match="delete (it|them) yourself"):
        _check_out_dir(tmp_path, prof, profile_configs(prof), 2, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


@pytest.mark.slow
def test_runs_trained_separately_are_adopted(tiny, tmp_path):
    # `robustrank train ... --out OUT/runs/NAME/seed-0` runs, then `reproduce --out OUT`
    out = tmp_path / "assembled"
    names = [c.name for c in profile_configs(load_profile("tiny"), only="fcnn")]
    for name in names:
        shutil.copytree(tiny.out_dir / "runs" / name / "seed-0", out / "runs" / name / "seed-0")
    before = _stamps(out, "runs/*/seed-0/final.safetensors")
    result = reproduce("tiny", out, only="fcnn", seeds=1, progress=False)
    assert _stamps(out, "runs/*/seed-0/final.safetensors") == before  # reused, not retrained
    for name in names:
        assert result.runs[name].runs[0].to_dict() == tiny.runs[name].runs[0].to_dict()


def test_runs_dir_with_foreign_run_is_refused(tmp_path):
    (tmp_path / "runs" / "my-experiment").mkdir(parents=True)
    with pytest.raises(ReproduceError, match="not empty"):
        reproduce("tiny", tmp_path, progress=False)
    assert not (tmp_path / "profile.json").exists()


def test_seeds_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ValueError, match="integer >= 1"):
        reproduce("tiny", tmp_path / "out", seeds=0, progress=False)
    assert not (tmp_path / "out").exists()


def test_profiles_declare_seeds_and_paper_attack_subsets():
    # one seed by default (the time budgets); more with --seeds N; the structure profile's
    # twin comparisons need training noise, so it runs 3
    assert [load_profile(p).seeds for p in ProfileName] == [1, 1, 1, 1, 3, 3]
    # certified: the quick runs with 3 seeds, certified by CROWN too
    quick, certified = load_profile("quick"), load_profile("certified")
    assert profile_configs(certified) == profile_configs(quick)
    assert certified.evaluation.certification.methods == ["ibp", "crown-ibp", "crown"]
    assert certified.evaluation.model_dump(exclude={"certification"}) == (
        quick.evaluation.model_dump(exclude={"certification"})
    )
    paper, long = load_profile("paper"), load_profile("paper-long")
    assert paper.evaluation.paper_n == 10000  # the whole test set for FGSM, PGD and GNM
    assert paper.evaluation.n == 500  # the strong attack's subset: one seed within the hour
    # paper-long: the same runs and attacks, the strong evaluation on 1000 inputs
    assert long.evaluation.model_dump() == {**paper.evaluation.model_dump(), "n": 1000}
    assert profile_configs(long) == profile_configs(paper)
    assert (long.families, long.theory) == (paper.families, paper.theory)


def test_a_family_can_override_the_evaluation_but_not_what_the_tables_share(monkeypatch):
    from robustrank.experiments import profiles

    quick, certified = load_profile("quick"), load_profile("certified")
    cnn, fcnn = quick.evaluation_of("cnn-pgd"), quick.evaluation_of("fcnn-pgd")
    assert fcnn == quick.evaluation and "precision" not in quick.evaluation.options
    assert cnn.options == {"n_queries": 1000, "precision": "auto"}  # the CNNs' AutoAttack
    assert (cnn.curve.options, cnn.diagnostics.n, cnn.diagnostics.steps) == ({"steps": 50}, 50, 50)
    differ = {"options", "curve", "diagnostics"}  # the rest is the profile's
    assert cnn.model_dump(exclude=differ) == fcnn.model_dump(exclude=differ)
    assert cnn.curve.eps == fcnn.curve.eps and cnn.diagnostics.n_queries == 500
    # certified reuses the quick runs' evaluations: the same per family, CROWN added
    for preset in ("cnn-pgd", "fcnn-pgd"):
        a, b = quick.evaluation_of(preset), certified.evaluation_of(preset)
        assert a.model_dump(exclude={"certification"}) == b.model_dump(exclude={"certification"})
        assert b.certification.methods == ["ibp", "crown-ibp", "crown"]

    real = profiles._profiles()

    def with_override(override, evaluation=real["tiny"]["evaluation"]):
        table = {**real, "tiny": {**real["tiny"], "evaluation": evaluation}}
        table["tiny"]["families"] = {
            **real["tiny"]["families"],
            "cnn": {**real["tiny"]["families"]["cnn"], "evaluation": override},
        }
        monkeypatch.setattr(profiles, "_profiles", lambda: table)
        return load_profile("tiny")

    tiny = with_override({"diagnostics": {"n": 20}})
    assert tiny.evaluation_of("cnn-pgd").diagnostics.n == 20
    assert tiny.evaluation_of("cnn-pgd").diagnostics.steps == 10  # merged, not replaced
    assert tiny.evaluation_of("fcnn-pgd").diagnostics.n == 40
    with pytest.raises(ValueError, match=r"family 'cnn'.*changes \['eps', 'seed'\]"):
        with_override({"eps": 0.1, "seed": 7})
    with pytest.raises(ValueError, match=r"family 'cnn', evaluation: (?s:.)*integer >= 1, got 0"):
        with_override({"n": 0})
    with pytest.raises(ValueError, match="the profile evaluates nothing"):
        with_override({"n": 10}, evaluation=None)


def test_profile_names_are_the_bundled_profiles():
    from robustrank.experiments.profiles import _profiles

    assert list(ProfileName) == list(_profiles())  # one registry: the enum is the YAML's keys


def test_profiles_cover_every_table_row():
    presets = set(list_presets())
    for name in ("quick", "paper", "paper-long"):
        configs = profile_configs(load_profile(name))
        names = [c.name for c in configs]
        assert set(names) <= presets
        rows = {(c.paper.table, c.paper.row) for c in configs if c.paper}
        assert len([r for r in rows if r[0] == 1]) == 7  # Table 1 has 7 rows
        assert len([r for r in rows if r[0] == 2]) == 7  # Table 2 has 7 rows
        # natural runs come before the fine-tuning runs that start from them
        for i, c in enumerate(configs):
            if c.init.from_preset:
                assert c.init.from_preset in names[:i]
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("huge")


def test_run_kinds_from_configs_match_the_bundled_preset_names():
    for name in list_presets():
        kind = run_kind(load_preset(name))
        if name.endswith("-natural"):
            assert kind == RunKind.natural, name
        elif name.endswith(("-fgsm", "-pgd", "-trades")):
            assert kind == RunKind.adversarial, name
        elif "-exact-" in name:
            assert kind == RunKind.structured, name
        elif name.endswith("-ibp"):  # certified fine-tuning: no attack, no regulariser
            assert kind == RunKind.certified, name
        else:
            assert kind == RunKind.regularised, name


def test_table_attacks_are_the_union_of_the_configs_in_first_seen_order():
    configs = profile_configs(load_profile("quick"))
    assert table_attacks(configs) == ["fgsm", "pgd", "gnm"]
    first = configs[0].model_copy(update={"history": HistoryConfig(attacks=["pgd"])})
    second = configs[1].model_copy(update={"history": HistoryConfig(attacks=["gnm", "fgsm"])})
    assert table_attacks([first, second]) == ["pgd", "gnm", "fgsm"]


def test_mi_record_keeps_layer_names_with_underscores_and_dots():
    row = {"epoch": 2, "step": 7, "test_acc": 0.9, "mi_t1_ixt_upper": 1.0, "mi_t1_iyt_upper": 0.5}
    row |= {"mi_block_a.conv1_ixt_lower": 2.0, "mi_block_a.conv1_iyt_lower": 0.25}
    rec = _mi_record(row)
    assert (rec["epoch"], rec["step"]) == (2, 7)
    assert rec["mi"] == [
        {"layer": "t1", "ixt_upper": 1.0, "iyt_upper": 0.5},
        {"layer": "block_a.conv1", "ixt_lower": 2.0, "iyt_lower": 0.25},
    ]


def test_method_labels_use_the_paper_rows_or_its_notation():
    from robustrank.experiments.summary import method_label
    from robustrank.training import load_preset

    assert method_label(load_preset("cnn-nuc2-0.1")) == (
        "lambda_{1,1} = 0.01, lambda_{1,2} = 0.01, lambda_{*,2} = 0.1"
    )
    joint = load_preset("fcnn-joint-1e-4-l1-1e-2")
    assert joint.paper is None
    assert method_label(joint) == "lambda_joint = 0.0001, lambda_{1,1} = 0.01"
    pgd = load_preset("fcnn-pgd").model_copy(update={"paper": None})
    assert method_label(pgd) == "PGD adv. train."


def test_evaluation_spec_names_a_registered_strong_attack_other_than_pgd():
    from pydantic import ValidationError

    from robustrank.evaluation import EvaluationSpec

    assert EvaluationSpec(attack="APGD-CE").attack == "apgd-ce"
    with pytest.raises(ValidationError, match="cannot be 'pgd'"):
        EvaluationSpec(attack="pgd")
    with pytest.raises(ValidationError, match="unknown attack"):
        EvaluationSpec(attack="autoatack")


def _user_files(directory):
    """Decoys a user keeps beside the outputs: a repository, notes, a data folder."""
    files = {".git/HEAD": "ref\n", "notes.txt": "mine\n", "data/x.npz": "npz", "runs/mine.txt": "m"}
    for rel, text in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return files


@pytest.mark.slow
def test_every_file_reproduce_writes_is_in_its_layout(tiny):
    from robustrank.ownership import unowned

    assert unowned(tiny.out_dir, REPRODUCE_DIR) == []


@pytest.mark.slow
def test_overwrite_on_its_own_output_deletes_only_what_reproduce_wrote(tiny, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny.out_dir, out)
    decoys = _user_files(out)
    prof = load_profile("quick")  # another profile: refused without --overwrite
    with pytest.raises(ReproduceError, match="profile 'tiny'.*--overwrite"):
        _check_out_dir(out, prof, profile_configs(prof), 1, overwrite=False)
    _check_out_dir(out, prof, profile_configs(prof), 1, overwrite=True)
    assert all((out / rel).read_text() == text for rel, text in decoys.items())
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == sorted([".robustrank.json", "profile.json", *decoys])
    assert json.loads((out / "profile.json").read_text())["profile"] == "quick"
    # the same profile again, with --overwrite, on the cleared directory: accepted
    _check_out_dir(out, prof, profile_configs(prof), 1, overwrite=True)


def test_overwrite_in_a_directory_with_a_foreign_profile_json_deletes_nothing(tmp_path):
    (tmp_path / "profile.json").write_text(json.dumps({"profile": "mine", "x": 1}))
    (tmp_path / "runs" / "my-own-experiment").mkdir(parents=True)
    (tmp_path / "runs" / "my-own-experiment" / "model.pt").write_text("weights")
    with pytest.raises(ReproduceError, match="no robustrank marker"):
        reproduce("tiny", tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "runs" / "my-own-experiment" / "model.pt").read_text() == "weights"
    assert json.loads((tmp_path / "profile.json").read_text())["profile"] == "mine"
