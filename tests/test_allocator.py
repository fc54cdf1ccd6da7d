"""robustrank.allocator: glibc keeps freed memory for reuse, in this process and its children;
the user's own settings and the opt-out win. Each case runs in a fresh interpreter, so the
test process's allocator and environment stay as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from robustrank.allocator import MALLOC_ENV, OPT_OUT_ENV

glibc_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="the settings are glibc's",
)

_PROBE = """
import json, os, subprocess, sys
from robustrank.allocator import MALLOC_ENV, keep_freed_memory
took = keep_freed_memory()
child = subprocess.run(
    [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
    capture_output=True, text=True, check=True,
)
seen = json.loads(child.stdout)
print(json.dumps({"took": took, "child": {k: seen.get(k) for k in MALLOC_ENV}}))
"""


def _probe(script: str = _PROBE, **env: str) -> dict:
    """``script``'s last line of JSON, run in a fresh interpreter with the test process's
    environment minus any allocator setting, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV and k != OPT_OUT_ENV}
    out = subprocess.run(
        [sys.executable, "-c", script], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_linux
def test_the_settings_apply_here_and_reach_the_processes_started_after():
    got = _probe()
    assert got["took"] is True
    assert got["child"] == MALLOC_ENV
    # glibc accepts no mmap threshold above 32 MiB on 64-bit systems
    assert int(MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]) <= 32 << 20


@glibc_linux
def test_a_users_own_malloc_variable_wins():
    got = _probe(MALLOC_TOP_PAD_="4096")
    assert got["took"] is False
    assert got["child"] == {k: ("4096" if k == "MALLOC_TOP_PAD_" else None) for k in MALLOC_ENV}


@pytest.mark.parametrize("value", ["system", " System "])
def test_the_opt_out_keeps_glibcs_defaults(value):
    got = _probe(**{OPT_OUT_ENV: value})
    assert got["took"] is False
    assert got["child"] == dict.fromkeys(MALLOC_ENV)


def test_the_cli_applies_them_before_any_command(monkeypatch):
    import importlib

    cli_main = importlib.import_module("robustrank.cli.main")
    calls = []
    monkeypatch.setattr(cli_main, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["--help"])
    assert exit_info.value.code == 0 and calls == [1]


_REUSE_PROBE = """
import json, resource
from robustrank.allocator import keep_freed_memory
took = keep_freed_memory()
import torch
n = 64 << 20  # larger than any mmap threshold glibc accepts (32 MiB)
faults = []
for _ in range(12):  # the heap settles after a few cycles (alignment padding)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(n // 4)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del t
print(json.dumps({"took": took, "faults": faults[-4:], "pages": n // 4096}))
"""


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@glibc_linux
def test_a_freed_block_larger_than_any_mmap_threshold_is_reused_without_faulting_again():
    """The conv net's activations at a working batch of a few hundred rows exceed 32 MiB.
    A loop that allocates, fills and frees a 64 MiB tensor: with the settings, once the
    heap has settled, each cycle reuses freed pages (page faults are counted by the kernel,
    independent of load); with glibc's defaults every cycle maps and faults in the whole
    block afresh (the control shows the probe can tell)."""
    got = _probe(_REUSE_PROBE)
    assert got["took"] is True
    assert sum(got["faults"]) < got["pages"] // 10
    if not _huge_pages_always():
        control = _probe(_REUSE_PROBE, **{OPT_OUT_ENV: "system"})
        assert control["took"] is False
        assert min(control["faults"]) >= got["pages"] // 2
