"""End to end: the tiny reproduce profile writes every artefact, and the report is valid.

The HTML report is checked twice: structurally (it parses, references nothing external,
every embedded image is a PNG that decodes) and in headless Chromium, when a ``chromium``
binary is installed (``.ci/run`` installs the Debian package; elsewhere the browser test
is skipped with a reason).
"""

import base64
import csv
import io
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from robustrank.experiments.figures import _mi_record
from robustrank.experiments.reproduce import (
    ReproduceError,
    RunSummary,
    assess_claims,
    load_profile,
    profile_configs,
    reproduce,
)
from robustrank.experiments.summary import RunKind, run_kind, table_attacks
from robustrank.training import HistoryConfig, list_presets, load_preset


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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "tiny"
    return reproduce("tiny", out, progress=False)


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
        assert (out / "runs" / c.name / "final.safetensors").is_file()
    # the fooling-ratio columns are the configs' history attacks
    assert tiny.attacks == table_attacks(configs) == ["fgsm", "pgd", "gnm"]
    # tables hold numbers for every run, with the paper's value beside ours
    for key in ("table1", "table2"):
        rows = list(csv.DictReader(io.StringIO((out / "tables" / f"{key}.csv").read_text())))
        assert rows
        for row in rows:
            ours, paper, diff = float(row["ours"]), float(row["paper"]), float(row["difference"])
            assert 0.0 <= ours <= 1.0 and 0.0 < paper < 1.0
            assert diff == pytest.approx(ours - paper)
            for a in tiny.attacks:
                assert 0.0 <= float(row[f"fr_{a}"]) <= 1.0
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {c.name for c in configs}
    assert [c["verdict"] for c in results["claims"]]
    for fig in results["figures"]:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_profile_evaluates_every_model_with_autoattack_curves_and_diagnostics(tiny):
    out = tiny.out_dir
    results = json.loads((out / "results.json").read_text())
    for name, ev in results["evaluations"].items():
        assert (out / "runs" / name / "evaluation.json").is_file()
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
            assert (
                row["ra_autoattack"]
                == results["evaluations"][row["preset"]]["autoattack"]["robust_accuracy"]
            )
    md = tiny.report_md.read_text()
    assert "RA AutoAttack" in md and "Diagnostics: fcnn-natural" in md
    assert "Robustness curves of the final FCNN models" in md
    assert any(c.claim.startswith("Claim 2 under AutoAttack") for c in tiny.claims)


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
    assert "Table 1" in md and "Claim 1" in md
    assert all(f"FR {a.upper()}" in md for a in tiny.attacks)


_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.setAttribute("data-probe", JSON.stringify(
    imgs.map((i) => [i.complete, i.naturalWidth, i.naturalHeight])));
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium_and_every_image_loads(tiny, tmp_path):
    # The report unchanged, plus a probe script that records each image's load state.
    text = tiny.report_html.read_text()
    assert text.count("</body>") == 1
    page = tmp_path / "report.html"
    page.write_text(text.replace("</body>", _PROBE + "</body>"))
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    start = dom.index('data-probe="') + len('data-probe="')
    probe = json.loads(dom[start : dom.index('"', start)].replace("&quot;", '"'))
    assert len(probe) == len(tiny.figures) > 0
    for complete, width, height in probe:
        assert complete and width > 50 and height > 50
    assert "<table" in dom and "Claim 1" in dom


@pytest.mark.slow
def test_second_call_reuses_finished_runs(tiny):
    before = {p: p.stat().st_mtime_ns for p in tiny.out_dir.glob("runs/*/final.safetensors")}
    again = reproduce("tiny", tiny.out_dir, progress=False)
    after = {p: p.stat().st_mtime_ns for p in tiny.out_dir.glob("runs/*/final.safetensors")}
    assert before == after
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


@pytest.mark.slow
def test_runs_trained_separately_are_adopted(tiny, tmp_path):
    # `robustrank train --preset NAME --out OUT/runs/NAME` runs, then `reproduce --out OUT`
    import shutil

    out = tmp_path / "assembled"
    shutil.copytree(tiny.out_dir / "runs" / "fcnn-natural", out / "runs" / "fcnn-natural")
    final = out / "runs" / "fcnn-natural" / "final.safetensors"
    before = final.stat().st_mtime_ns
    result = reproduce("tiny", out, only="fcnn", progress=False)
    assert final.stat().st_mtime_ns == before  # reused, not retrained
    assert result.tables["table1"] == tiny.tables["table1"]  # deterministic runs


def test_runs_dir_with_foreign_run_is_refused(tmp_path):
    (tmp_path / "runs" / "my-experiment").mkdir(parents=True)
    with pytest.raises(ReproduceError, match="not empty"):
        reproduce("tiny", tmp_path, progress=False)
    assert not (tmp_path / "profile.json").exists()


def test_profiles_cover_every_table_row():
    presets = set(list_presets())
    for name in ("quick", "paper"):
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


def _summary(preset, fam, fooling, rank, sparsity, kind, parent=None, **lambdas):
    s = RunSummary(preset, fam, preset, None, None, 0.9, fooling, rank, sparsity, 1, None)
    s.kind, s.parent = RunKind(kind), parent
    for key, value in lambdas.items():
        setattr(s, key, value)
    return s


def test_claim_verdicts_follow_the_numbers():
    nat = _summary("fcnn-natural", "fcnn", {"pgd": 0.9}, {"W1": 4.0}, {"W1": 100.0}, "natural")
    adv = dict(kind="adversarial", parent="fcnn-natural")
    reg = dict(kind="regularised", parent="fcnn-natural", l1={"1": 0.01})
    lower = _summary("fcnn-pgd", "fcnn", {"pgd": 0.2}, {"W1": 3.0}, {"W1": 80.0}, **adv)
    higher = _summary("fcnn-pgd", "fcnn", {"pgd": 0.2}, {"W1": 5.0}, {"W1": 120.0}, **adv)
    reg_bad = _summary("fcnn-l1-1e-2", "fcnn", {"pgd": 0.95}, {"W1": 4.5}, {"W1": 110.0}, **reg)
    reg_good = _summary("fcnn-l1-1e-2", "fcnn", {"pgd": 0.5}, {"W1": 3.5}, {"W1": 90.0}, **reg)
    c1 = assess_claims({"fcnn-natural": nat, "fcnn-pgd": lower})[0]
    assert c1.verdict == "supported"
    c1 = assess_claims({"fcnn-natural": nat, "fcnn-pgd": higher})[0]
    assert c1.verdict == "not supported"
    c2 = assess_claims({"fcnn-natural": nat, "fcnn-l1-1e-2": reg_bad})[1]
    assert c2.verdict == "not supported"
    c2 = assess_claims({"fcnn-natural": nat, "fcnn-l1-1e-2": reg_good})[1]
    assert c2.verdict == "supported"
    nan = _summary("fcnn-pgd", "fcnn", {"pgd": math.nan}, {"W1": math.nan}, {"W1": math.nan}, **adv)
    assert assess_claims({"fcnn-natural": nat, "fcnn-pgd": nan})[0].verdict == "not measured"


def test_claim_2_under_autoattack_compares_autoattack_fooling_ratios():
    nat = _summary("fcnn-natural", "fcnn", {"pgd": 0.9}, {"W1": 4.0}, {"W1": 100.0}, "natural")
    reg = dict(kind="regularised", parent="fcnn-natural", l1={"1": 0.01})
    good = _summary("fcnn-l1", "fcnn", {"pgd": 0.5}, {"W1": 3.5}, {"W1": 90.0}, **reg)
    bad = _summary("fcnn-l1b", "fcnn", {"pgd": 0.5}, {"W1": 3.5}, {"W1": 90.0}, **reg)
    nat.strong = {"fr_autoattack": 0.9, "ra_autoattack": 0.09, "ra_pgd": 0.2}
    good.strong = {"fr_autoattack": 0.6, "ra_autoattack": 0.35, "ra_pgd": 0.4}
    bad.strong = {"fr_autoattack": 0.95, "ra_autoattack": 0.04, "ra_pgd": 0.4}
    claims = assess_claims({"fcnn-natural": nat, "fcnn-l1": good, "fcnn-l1b": bad})
    aa = next(c for c in claims if c.claim.startswith("Claim 2 under AutoAttack"))
    assert aa.verdict == "partly supported" and aa.evidence[0].startswith("1 of 2")
    assert "[lower]" in aa.evidence[1] and "[not lower]" in aa.evidence[2]
    nat.strong = {}
    assert not any(
        c.claim.startswith("Claim 2 under")
        for c in assess_claims({"fcnn-natural": nat, "fcnn-l1": good})
    )


def test_claims_classify_runs_by_config_not_by_name():
    # an adversarial run named like a regulariser, its natural parent under any name
    nat = _summary("base", "fcnn", {"pgd": 0.9}, {"W1": 4.0}, {"W1": 100.0}, "natural")
    odd = _summary(
        "fcnn-l1-1e-2", "fcnn", {"pgd": 0.2}, {"W1": 3.0}, {"W1": 80.0}, "adversarial", "base"
    )
    c1, c2 = assess_claims({"base": nat, "fcnn-l1-1e-2": odd})
    assert c1.verdict == "supported" and "vs base" in c1.evidence[1]
    assert c2.verdict == "not measured"


def test_nuclear_claim_pairs_each_run_with_its_l1_only_twin():
    l1 = {"1": 0.01, "2": 0.01}
    common = dict(kind="regularised", parent="cnn-natural", l1=l1)
    runs = {
        "plain-l1": _summary("plain-l1", "cnn", {}, {"W2": 5.0}, {}, **common),
        "n-big": _summary("n-big", "cnn", {}, {"W2": 4.0}, {}, nuclear={"2": 0.5}, **common),
        "n-small": _summary("n-small", "cnn", {}, {"W2": 6.0}, {}, nuclear={"2": 0.1}, **common),
    }
    claim = assess_claims(runs)[2]
    assert claim.claim.startswith("Nuclear-norm regularisation")
    assert claim.verdict == "partly supported"
    assert [line.split()[0] for line in claim.evidence[1:]] == ["n-small", "n-big"]
    del runs["plain-l1"]  # no l1-only twin: nothing to compare
    assert len(assess_claims(runs)) == 2


def test_run_kinds_from_configs_match_the_bundled_preset_names():
    for name in list_presets():
        kind = run_kind(load_preset(name))
        if name.endswith("-natural"):
            assert kind == RunKind.natural, name
        elif name.endswith(("-fgsm", "-pgd")):
            assert kind == RunKind.adversarial, name
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
    from robustrank.experiments.reproduce import _method
    from robustrank.training import load_preset

    assert _method(load_preset("cnn-nuc2-0.1")) == (
        "lambda_{1,1} = 0.01, lambda_{1,2} = 0.01, lambda_{*,2} = 0.1"
    )
    joint = load_preset("fcnn-joint-1e-4-l1-1e-2")
    assert joint.paper is None
    assert _method(joint) == "lambda_joint = 0.0001, lambda_{1,1} = 0.01"
    pgd = load_preset("fcnn-pgd").model_copy(update={"paper": None})
    assert _method(pgd) == "PGD adv. train."
