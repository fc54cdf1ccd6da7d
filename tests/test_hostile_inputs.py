"""Hostile and broken inputs (issue 20, items 4-6 and the uint64 label of item 8).

YAML alias bombs and oversized YAML, checkpoints and npz files whose headers declare huge
shapes, and labels out of range. The hostile files are loaded in a subprocess under a
lowered address-space limit (``RLIMIT_AS``) and must give one typed error, not a
``MemoryError``; property-based tests feed randomly corrupted checkpoints, npz files, YAML
configs and sweep specs to the loaders, which must load correctly or raise their typed
error, never anything else. The new public APIs are imported inside the tests that use
them, so that each test fails on its own account on code without them.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustrank import data
from robustrank.evaluation import accuracy, eps_sweep, evaluate, make_attack
from robustrank.models import (
    CheckpointError,
    create_model,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from robustrank.sweeps import SpecError, SweepSpec, load_spec
from robustrank.training import ConfigError, TrainConfig, config_from_dict, load_config, train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SPEC = ROOT / "examples" / "sweeps" / "tiny-open-question.yaml"
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --------------------------------------------------------------------------- hostile files


def billion_laughs(indent: str = "", levels: int = 9) -> str:
    """Nine anchored lists, each of nine aliases of the previous: 9**9 values expanded."""
    lines = [f"{indent}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def billion_laughs_flow() -> str:
    """The same bomb on one line (flow style), as a ``--set KEY=VALUE`` value."""
    lists = ["&a0 [" + ", ".join(["lol"] * 9) + "]"]
    lists += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "[" + ", ".join(lists) + "]"


def config_text(adversarial_options: str = "    {}\n") -> str:
    """A valid training config; ``adversarial.options`` (free-form, accepted by validation
    with attack none) holds whatever YAML is given."""
    return (
        "name: hostile\nmodel: {name: fcnn}\ndataset: mnist\nepochs: 1\nbatch_size: 8\n"
        "lr: 0.01\nadversarial:\n  attack: none\n  options:\n" + adversarial_options
    )


def spec_text(overrides_adversarial: str) -> str:
    return (
        "name: hostile\nbase: fcnn-natural\nstrategy: grid\nspace:\n  seed: [0, 1]\n"
        "overrides:\n  epochs: 1\n  adversarial:\n    options:\n" + overrides_adversarial
    )


def fcnn_checkpoint(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real checkpoint of the paper's FCNN (about 72 KB) and its tensors."""
    torch.manual_seed(0)
    model = create_model("fcnn")
    save_checkpoint(model, path, note="hostile-inputs")
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def with_robustrank_header(raw: bytes, robustrank: str) -> bytes:
    """The safetensors file ``raw`` with its robustrank metadata string replaced."""
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = {"robustrank": robustrank}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def edited_header(raw: bytes, **fields: object) -> str:
    """The checkpoint's robustrank header (JSON text) with ``fields`` replaced."""
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["robustrank"])
    return json.dumps({**header, **fields})


def npy_bytes(shape: tuple[int, ...], dtype: str, payload: bytes) -> bytes:
    """An .npy member whose header declares ``shape`` whatever ``payload`` holds."""
    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def small_arrays(side: int = 28, n_train: int = 16, n_test: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 1, side, side), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.int64),
        "x_test": rng.integers(0, 256, (n_test, 1, side, side), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.int64),
    }


def write_members(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for key, blob in members.items():
            z.writestr(f"{key}.npy", blob)
    return path


def claiming_npz(path: Path, n_claimed: int) -> Path:
    """An npz whose test split's headers claim ``n_claimed`` examples of 1 x 28 x 28 uint8
    (7.3 GiB for 10**7) but hold 8: the file itself stays a few KB."""
    a = small_arrays()
    members = {k: npy_bytes(v.shape, v.dtype.str, v.tobytes()) for k, v in a.items()}
    members["x_test"] = npy_bytes((n_claimed, 1, 28, 28), "|u1", a["x_test"].tobytes())
    members["y_test"] = npy_bytes((n_claimed,), "<i8", a["y_test"].tobytes())
    return write_members(path, members)


# --------------------------------------------------------------------------- bounded memory

#: Address space allowed above what the subprocess holds after importing torch and
#: robustrank (about 0.7 GiB measured); every hostile file here needs 3.5 GiB or more.
HEADROOM = 3 << 29  # 1.5 GiB

HARNESS = r"""
import json, re, resource, sys
import torch
from robustrank.data import load_dataset
from robustrank.experiments.budgets import parse_overrides
from robustrank.models import load_checkpoint
from robustrank.sweeps import load_spec
from robustrank.training import load_config

def vm_size():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024

def run(kind, arg):
    if kind == "config":  # train serialises the config it loaded into the run directory
        return load_config(arg).to_yaml()
    if kind == "spec":  # a sweep records its identity (spec and base config) in sweep.json
        return json.dumps(load_spec(arg).identity())
    if kind == "set":  # budgets --set KEY=VALUE
        return json.dumps(parse_overrides([arg]))
    if kind == "checkpoint":
        return load_checkpoint(arg)
    if kind == "npz":
        return load_dataset("npz", "test", path=arg)
    if kind == "control":  # proves the limit is in force
        return bytearray(int(arg))

torch.set_num_threads(1)  # no thread pools (stacks, malloc arenas) after the measurement
cases = json.loads(sys.argv[1])
limit = vm_size() + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for name, kind, arg in cases:
    try:
        run(kind, arg)
        outcome = ["loaded", ""]
    except Exception as err:
        outcome = [type(err).__name__, str(err)[:2000]]
    print(json.dumps([name, *outcome]), flush=True)
"""


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Every hostile file loaded once, in one subprocess under ``RLIMIT_AS``: name ->
    (exception type name or "loaded", message)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("needs RLIMIT_AS and /proc/self/status (Linux)")
    tmp = tmp_path_factory.mktemp("bounded")
    (tmp / "config.yaml").write_text(config_text(billion_laughs("    ")))
    (tmp / "spec.yaml").write_text(spec_text(billion_laughs("      ")))
    raw = fcnn_checkpoint(tmp / "good.safetensors")[0].read_bytes()
    for name, options in {"width": {"width": 2_000_000}, "depth": {"depth": 10**8}}.items():
        arch = {"name": "fcnn", "options": options}
        blob = with_robustrank_header(raw, edited_header(raw, architecture=arch))
        (tmp / f"{name}.safetensors").write_bytes(blob)
    claiming_npz(tmp / "claims.npz", 10**7)
    (tmp / "single.npz").write_bytes(npy_bytes((10**7, 1, 28, 28), "|u1", bytes(64)))
    cases = [
        ("control", "control", str(HEADROOM + (1 << 30))),
        ("yaml-config", "config", str(tmp / "config.yaml")),
        ("yaml-spec", "spec", str(tmp / "spec.yaml")),
        ("yaml-set", "set", f"adversarial.options.bomb={billion_laughs_flow()}"),
        ("checkpoint-width", "checkpoint", str(tmp / "width.safetensors")),
        ("checkpoint-depth", "checkpoint", str(tmp / "depth.safetensors")),
        ("npz-claims", "npz", str(tmp / "claims.npz")),
        ("npy-as-npz", "npz", str(tmp / "single.npz")),
    ]
    command = [sys.executable, "-c", HARNESS, json.dumps(cases), str(HEADROOM)]
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
        stdout, stderr = proc.stdout, f"exit code {proc.returncode}: {proc.stderr[-2000:]}"
    except subprocess.TimeoutExpired as err:  # report the cases that finished
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
        stderr = "timed out after 180 s"
    results = {"_stderr": ("", stderr)}
    for line in stdout.splitlines():
        name, outcome, message = json.loads(line)
        results[name] = (outcome, message)
    return results


def _outcome(bounded: dict[str, tuple[str, str]], name: str) -> tuple[str, str]:
    assert name in bounded, f"the subprocess died before {name}: {bounded['_stderr']}"
    return bounded[name]


def test_address_space_limit_is_in_force(bounded) -> None:
    assert _outcome(bounded, "control")[0] == "MemoryError"


@pytest.mark.parametrize(
    "case, error, pattern",
    [
        ("yaml-config", "ConfigError", r"config\.yaml: its YAML aliases expand to more than"),
        ("yaml-spec", "SpecError", r"spec\.yaml: its YAML aliases expand to more than"),
        ("yaml-set", "BudgetError", r"--set adversarial\.options\.bomb: its YAML aliases"),
        ("checkpoint-width", "CheckpointError", r"width\.safetensors: weights do not match"),
        ("checkpoint-depth", "CheckpointError", r"depth\.safetensors: .*far more layers"),
        ("npz-claims", "DataIntegrityError", r"claims\.npz: x_test: declares shape"),
        ("npy-as-npz", "DataIntegrityError", r"single\.npz: holds a single array"),
    ],
)
def test_hostile_file_refused_in_bounded_memory(bounded, case, error, pattern) -> None:
    outcome, message = _outcome(bounded, case)
    assert outcome == error, message
    assert re.search(pattern, message), message
    assert "Fix" in message or "fix" in message or "re-save" in message, message
    assert "\n" not in message


# --------------------------------------------------------------------------- YAML


@pytest.mark.parametrize(
    "text, pattern",
    [
        (billion_laughs(), r"expand to more than 100,000 values"),
        ("a: &a [1, *a]\n", r"refers to the node that contains it"),
        ("[" * 100 + "]" * 100, r"nested deeper than 64 levels"),
        ("x: " + "y" * (1 << 20) + "\n", r"above robustrank's limit of 1,048,576 bytes"),
        ("when: 2023-02-31\n", r"a YAML value cannot be read.*day is out of range"),
        ("n: " + "1" * 5000 + "\n", r"a YAML value cannot be read"),
        ("a: [1, 2\n", r"YAML syntax error: .* at line 2, column 1"),
    ],
)
def test_load_yaml_refuses_with_one_typed_line(text: str, pattern: str) -> None:
    from robustrank.yamlio import YAMLInputError, load_yaml

    with pytest.raises(YAMLInputError, match=pattern) as info:
        load_yaml(text, "hostile.yaml")
    message = str(info.value)
    assert message.startswith("hostile.yaml: ") and "Fix" in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_load_yaml_counts_aliases_as_expanded() -> None:
    from robustrank.yamlio import yaml_node_count

    # 1 mapping + key/value pairs: a (1) + list of 3 (4); b (1) + alias of that list (4)
    node = yaml.compose("a: &x [1, 2, 3]\nb: *x\n")
    assert yaml_node_count(node) == 1 + (1 + 4) + (1 + 4)
    node = yaml.compose(billion_laughs(levels=3))
    # level 0 list: 1 + 9; level 1: 1 + 9 * 10; level 2: 1 + 9 * 91; plus 3 keys and the map
    assert yaml_node_count(node) == 1 + 3 + 10 + 91 + 820


def test_oversized_config_file_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(config_text() + "description: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: .* of YAML, above .* limit .*Fix"):
        load_config(path)


def test_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(config_text().replace("hostile", "caf\xe9").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load_config(path)


def test_recursive_alias_in_spec_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text("      loop: &l [*l]\n"))
    with pytest.raises(SpecError, match=r"spec\.yaml: a YAML alias refers to the node"):
        load_spec(path)


# --------------------------------------------------------------------------- checkpoints


def _expect_header_error(raw: bytes, robustrank: str, path: Path, loader) -> str:
    path.write_bytes(with_robustrank_header(raw, robustrank))
    with pytest.raises(CheckpointError) as info:
        loader(path)
    message = str(info.value)
    assert str(path) in message and "re-save it" in message and "\n" not in message
    return message


@pytest.mark.parametrize(
    "metadata, pattern",
    [("[1, 2]", "a JSON list"), ('"fcnn"', "a JSON str"), ("3", "a JSON int")],
)
@pytest.mark.parametrize("loader", [load_checkpoint, read_checkpoint_header])
def test_checkpoint_metadata_that_is_not_an_object(tmp_path, metadata, pattern, loader) -> None:
    raw = fcnn_checkpoint(tmp_path / "good.safetensors")[0].read_bytes()
    message = _expect_header_error(raw, metadata, tmp_path / "bad.safetensors", loader)
    assert f"robustrank metadata is {pattern}, not an object" in message


@pytest.mark.parametrize(
    "fields, pattern",
    [
        ({"architecture": ["fcnn"]}, r"its architecture is a list, not an object"),
        ({"metadata": [1]}, r"its metadata is not an object"),
        ({"input_shape": [0, 28, 28]}, r"input_shape \[0, 28, 28\] is not a list of positive"),
        ({"input_shape": "abc"}, r"input_shape 'abc' is not a list"),
    ],
)
def test_checkpoint_header_fields_of_the_wrong_type(tmp_path, fields, pattern) -> None:
    raw = fcnn_checkpoint(tmp_path / "good.safetensors")[0].read_bytes()
    message = _expect_header_error(
        raw, edited_header(raw, **fields), tmp_path / "bad.safetensors", load_checkpoint
    )
    assert re.search(pattern, message), message


# --------------------------------------------------------------------------- npz and IDX


def test_npz_header_larger_than_its_member_is_refused(tmp_path: Path) -> None:
    path = claiming_npz(tmp_path / "claims.npz", 1000)  # 784 KB claimed, 6 KB stored
    with pytest.raises(data.DataIntegrityError) as info:
        data.load_dataset("npz", "test", path=path)
    message = str(info.value)
    assert "x_test: declares shape (1000, 1, 28, 28) of uint8 (784,000 bytes)" in message
    assert "its archive member holds 6,272 bytes" in message and "Fix" in message


def _central_entry(raw: bytes, name: bytes) -> int:
    """Offset of ``name``'s entry in a zip's central directory."""
    at = raw.index(b"PK\x01\x02")
    while raw[at + 46 : at + 46 + int.from_bytes(raw[at + 28 : at + 30], "little")] != name:
        at = raw.index(b"PK\x01\x02", at + 46)
    return at


def test_npz_member_claiming_more_than_it_stores_is_refused(tmp_path: Path) -> None:
    """A forged zip whose central directory claims a stored member is much larger than it
    is, with a header that agrees with the claim."""
    path = claiming_npz(tmp_path / "forged.npz", 100)
    raw = bytearray(path.read_bytes())
    entry = _central_entry(bytes(raw), b"x_test.npy")
    raw[entry + 24 : entry + 28] = (78_528).to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(raw))
    assert zipfile.ZipFile(path).getinfo("x_test.npy").file_size == 78_528
    with pytest.raises(data.DataIntegrityError, match=r"x_test: claims 78,528 bytes uncompressed"):
        data.load_dataset("npz", "test", path=path)


def test_npz_uint64_label_is_out_of_range_not_negative(tmp_path: Path) -> None:
    arrays = small_arrays(side=4)
    arrays["y_train"] = np.arange(16, dtype=np.uint64)
    arrays["y_train"][3] = 2**63
    np.savez(tmp_path / "u64.npz", **arrays)
    with pytest.raises(data.DataIntegrityError) as info:
        data.load_dataset("npz", "train", path=tmp_path / "u64.npz")
    message = str(info.value)
    assert "y_train: has label 9223372036854775808, out of range" in message
    assert "negative" not in message


def test_idx_gzip_bomb_stops_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustrank.data import idx

    monkeypatch.setattr(idx, "MAX_IDX_BYTES", 4096)
    payload = bytes(100_000)
    bomb = gzip.compress(b"\x00\x00\x08\x01" + len(payload).to_bytes(4, "big") + payload)
    assert len(bomb) < 1000
    with pytest.raises(data.IDXFormatError, match=r"gzip data expands to more than 5,120 bytes"):
        idx.read_idx(bomb)


# --------------------------------------------------------------------------- labels


def _model_and_data(bad_label: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("fcnn")
    x = torch.rand(8, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, bad_label])
    return model, x, y


@pytest.mark.parametrize(
    "run",
    [
        lambda m, x, y: evaluate(m, make_attack("fgsm", m, 0.05), x, y),
        lambda m, x, y: eps_sweep(m, "fgsm", [0.05], x, y),
        lambda m, x, y: accuracy(m, x, y),
    ],
    ids=["evaluate", "eps_sweep", "accuracy"],
)
@pytest.mark.parametrize("bad_label", [100, 10, -1])
def test_evaluation_refuses_labels_the_model_cannot_predict(run, bad_label) -> None:
    model, x, y = _model_and_data(bad_label)
    with pytest.raises(ValueError, match=rf"label {bad_label} .*model with 10 classes") as info:
        run(model, x, y)
    assert isinstance(info.value, data.DataError)
    assert type(info.value).__name__ == "LabelError"


def test_check_labels_reports_the_uint64_value() -> None:
    from robustrank.data import LabelError, check_labels

    y = np.array([0, 2**63, 1], dtype=np.uint64)
    with pytest.raises(LabelError, match=r"src: label 9223372036854775808 \(e\.g\. at index 1"):
        check_labels(y, 10, "src")
    check_labels(torch.arange(10), 10, "src")  # every class once: fine


def test_train_refuses_labels_out_of_range_before_writing_the_run(tmp_path: Path) -> None:
    arrays = small_arrays()
    arrays["y_train"][5] = 100
    np.savez(tmp_path / "labels.npz", **arrays)
    config = config_from_dict(
        {
            "name": "labels",
            "model": {"name": "fcnn"},
            "dataset": {"name": "npz", "path": str(tmp_path / "labels.npz")},
            "epochs": 1,
            "batch_size": 8,
            "lr": 0.01,
            "history": {"evaluate": False},
        }
    )
    out = tmp_path / "run"
    with pytest.raises(data.DataError, match=r"labels\.npz, train split: label 100 .*10 classes"):
        train(config, out, progress=False)
    assert not out.exists()  # refused before the run directory was created
    # --overwrite of a finished run with bad data refuses before deleting that run
    good = small_arrays()
    np.savez(tmp_path / "good.npz", **good)
    ok = config.model_copy(
        update={"dataset": config.dataset.model_copy(update={"path": str(tmp_path / "good.npz")})}
    )
    first = train(ok, out, progress=False)
    with pytest.raises(data.DataError, match="label 100"):
        train(config, out, overwrite=True, progress=False)
    assert (out / "done.json").exists() and first.final_checkpoint.exists()


# --------------------------------------------------------------------------- properties

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 1 << 30), st.integers(0, 7)),
        st.tuples(st.just("truncate"), st.integers(0, 1 << 30)),
        st.tuples(st.just("insert"), st.integers(0, 1 << 30), st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), st.integers(0, 1 << 30), st.integers(1, 16)),
    ),
    min_size=1,
    max_size=4,
)

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def mutate(blob: bytes, ops: list[tuple]) -> bytes:
    """Apply byte-level corruptions: flip a bit, truncate, insert or delete bytes."""
    buf = bytearray(blob)
    for op in ops:
        if not buf:
            break
        at = op[1] % len(buf)
        if op[0] == "flip":
            buf[at] ^= 1 << op[2]
        elif op[0] == "truncate":
            del buf[at:]
        elif op[0] == "insert":
            buf[at:at] = op[2]
        else:
            del buf[at : at + op[2]]
    return bytes(buf)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> tuple[bytes, dict[str, torch.Tensor]]:
    path, tensors = fcnn_checkpoint(tmp_path_factory.mktemp("ckpt") / "good.safetensors")
    return path.read_bytes(), tensors


def _fcnn_options() -> st.SearchStrategy:
    names = st.sampled_from(["width", "depth", "num_classes", "activation", "mean", "std"])
    values = st.integers(-3, 10**7) | st.sampled_from(["relu", "tanh", "bogus"]) | _JSON
    return st.dictionaries(names, values, max_size=3)


@FUZZ
@given(fuzz=st.data())
def test_corrupted_checkpoints_load_or_raise_checkpoint_error(
    tmp_path, checkpoint_bytes, fuzz
) -> None:
    raw, tensors = checkpoint_bytes
    kind = fuzz.draw(st.sampled_from(["bytes", "metadata", "architecture", "options", "field"]))
    if kind == "bytes":
        blob = mutate(raw, fuzz.draw(_OPS))
    elif kind == "metadata":
        blob = with_robustrank_header(raw, json.dumps(fuzz.draw(_JSON)))
    elif kind == "architecture":
        blob = with_robustrank_header(raw, edited_header(raw, architecture=fuzz.draw(_JSON)))
    elif kind == "options":
        arch = {"name": "fcnn", "options": fuzz.draw(_fcnn_options())}
        blob = with_robustrank_header(raw, edited_header(raw, architecture=arch))
    else:
        field = fuzz.draw(st.sampled_from(["metadata", "input_shape", "sha256", "format"]))
        blob = with_robustrank_header(raw, edited_header(raw, **{field: fuzz.draw(_JSON)}))
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(blob)
    try:
        header = read_checkpoint_header(path)
        model, meta = load_checkpoint(path)
    except CheckpointError as err:
        assert str(path) in str(err)
        return
    assert isinstance(header, dict) and isinstance(meta, dict)
    state = model.state_dict()
    assert state.keys() == tensors.keys()
    assert all(torch.equal(state[k], tensors[k]) for k in tensors)


@pytest.fixture(scope="module")
def npz_bytes() -> tuple[bytes, dict[str, np.ndarray]]:
    arrays = small_arrays(side=4, n_train=6, n_test=4)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue(), arrays


@FUZZ
@given(fuzz=st.data())
def test_corrupted_npz_files_load_or_raise_data_error(tmp_path, npz_bytes, fuzz) -> None:
    raw, arrays = npz_bytes
    path = tmp_path / "fuzz.npz"
    if fuzz.draw(st.booleans()):
        path.write_bytes(mutate(raw, fuzz.draw(_OPS)))
    else:  # headers that declare other shapes than their members hold
        key = fuzz.draw(st.sampled_from(sorted(arrays)))
        shape = tuple(fuzz.draw(st.lists(st.integers(0, 10**7), max_size=5)))
        members = {k: npy_bytes(v.shape, v.dtype.str, v.tobytes()) for k, v in arrays.items()}
        members[key] = npy_bytes(shape, arrays[key].dtype.str, arrays[key].tobytes())
        write_members(path, members)
    split = fuzz.draw(st.sampled_from(["train", "test"]))
    try:
        x, y = data.load_dataset("npz", split, path=path)
    except data.DataError as err:
        assert str(path) in str(err)
        return
    want_x = torch.from_numpy(arrays[f"x_{split}"]).float() / 255
    assert torch.equal(x, want_x) and torch.equal(y, torch.from_numpy(arrays[f"y_{split}"]))


_YAML_TOKENS = st.sampled_from(
    [
        "name: t\n",
        "model: {name: fcnn}\n",
        "dataset: mnist\n",
        "epochs: 1\n",
        "batch_size: 8\n",
        "lr: 0.1\n",
        "adversarial: {options: ",
        "&a ",
        "*a",
        "[",
        "]",
        "{",
        "}",
        ", ",
        ": ",
        "- ",
        "\n",
        "  ",
        "<<: *a\n",
        "!!python/object/apply:os.system ",
        "2023-02-31",
        "1" * 5000,
        "? ",
        "|\n",
        "---\n",
        "!!binary ",
        "x",
    ]
)


@FUZZ
@given(fuzz=st.data())
def test_corrupted_configs_load_or_raise_config_error(tmp_path, fuzz) -> None:
    if fuzz.draw(st.booleans()):
        text = mutate(config_text().encode(), fuzz.draw(_OPS))
    else:
        text = "".join(fuzz.draw(st.lists(_YAML_TOKENS, max_size=30))).encode()
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text)
    try:
        config = load_config(path)
    except ConfigError as err:
        assert str(path) in str(err)
        return
    assert isinstance(config, TrainConfig)


@FUZZ
@given(ops=_OPS)
def test_corrupted_specs_load_or_raise_spec_error(tmp_path, ops) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(mutate(EXAMPLE_SPEC.read_bytes(), ops))
    try:
        spec = load_spec(path)
    except SpecError as err:
        assert str(path) in str(err)
        return
    assert isinstance(spec, SweepSpec)
