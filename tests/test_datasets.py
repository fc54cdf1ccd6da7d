"""Tests for the dataset registry, DatasetRef, the CIFAR-10 binary reader and npz datasets.

CIFAR-10 cannot be downloaded here, so the tests write synthetic files in exactly the
official binary format (with a patched record count, and a patched checksum for synthetic
archives) and compare against an independent per-byte decoding written below.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robustrank import data
from robustrank.data import cifar10, npz, registry
from robustrank.data.mnist import MNIST

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A private copy of the registry and cache dir for every test."""
    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY.copy())
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(data.IDX_ENV, raising=False)


def _toy_loader(split: str, path: Path | None, **kw: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Two tiny blobs."""
    n = 6 if split == "train" else 4
    x = torch.linspace(0, 1, n * 2 * 3 * 3).reshape(n, 2, 3, 3)
    return x, torch.arange(n) % 2


# --------------------------------------------------------------------------- registry


def test_builtins_are_registered() -> None:
    assert data.list_datasets()[:4] == ["mnist", "fashion-mnist", "cifar10", "npz"]
    assert data.DATASETS == ("mnist", "fashion-mnist") == tuple(data.fetchable_datasets())
    mnist = data.get_dataset("mnist")
    assert (mnist.input_shape, mnist.num_classes, mnist.splits) == ((1, 28, 28), 10, SPLITS)
    assert dict(mnist.checksums) == {f"{s}-{k}": v for (s, k), v in MNIST.sha256.items()}
    assert not mnist.needs_path and mnist.class_names == tuple("0123456789")
    cifar = data.get_dataset("cifar10")
    assert (cifar.input_shape, cifar.num_classes, cifar.needs_path) == ((3, 32, 32), 10, True)
    assert cifar.checksums["md5"] == "c32a1d4ab5d03f1284b67883e8d87530"
    assert cifar.class_names[0] == "airplane" and len(cifar.class_names) == 10
    spec = data.get_dataset("npz")
    assert (spec.input_shape, spec.num_classes, spec.needs_path) == (None, None, True)
    assert dict(spec.checksums) == {}
    with pytest.raises(TypeError):
        cifar.checksums["md5"] = "x"  # read-only


SPLITS = ("train", "test")


def test_only_fetchable_datasets_are_fetched(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'cifar10' is not fetched.*path=.*mnist, fashion-mnist"):
        data.fetch("cifar10", tmp_path)
    with pytest.raises(ValueError, match=r"'npz' is not fetched"):
        data.cache_path("npz", "train", "images", tmp_path)
    assert [r.dataset for r in data.verify(tmp_path)][::4] == list(data.DATASETS)
    info = data.dataset_info("fashion-mnist")  # from the registry, nothing loaded
    assert (info.input_shape, info.num_classes, info.class_names[-1]) == (
        (1, 28, 28),
        10,
        "Ankle boot",
    )
    assert not any(tmp_path.iterdir())


def test_unknown_name_lists_names_and_suggests() -> None:
    with pytest.raises(ValueError) as info:
        data.get_dataset("cifar-10")
    msg = str(info.value)
    assert "unknown dataset 'cifar-10'" in msg and "mnist, fashion-mnist, cifar10, npz" in msg
    assert "did you mean 'cifar10'?" in msg
    with pytest.raises(ValueError, match=r"choose one of") as info:
        data.load_dataset("qqqq", "train")
    assert "did you mean" not in str(info.value)


def test_register_spec_duplicate_and_overwrite() -> None:
    spec = data.DatasetSpec("blobs", (2, 3, 3), 2, SPLITS, _toy_loader, description="v1")
    assert data.register_dataset(spec) is spec
    assert data.list_datasets()[-1] == "blobs" and data.get_dataset("blobs") is spec
    with pytest.raises(ValueError, match=r"'blobs' is already registered.*overwrite=True"):
        data.register_dataset(data.DatasetSpec("blobs", None, None, SPLITS, _toy_loader))
    with pytest.raises(ValueError, match=r"already registered"):
        data.register_dataset(data.DatasetSpec("mnist", None, None, SPLITS, _toy_loader))
    v2 = data.DatasetSpec("blobs", (2, 3, 3), 2, SPLITS, _toy_loader, description="v2")
    data.register_dataset(v2, overwrite=True)
    assert data.get_dataset("blobs").description == "v2"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": "bad name"}, r"dataset name must be"),
        ({"input_shape": (3, 32)}, r"input_shape must be \(C, H, W\)"),
        ({"num_classes": 0}, r"num_classes must be >= 1"),
        ({"splits": ()}, r"splits must be unique"),
        ({"class_names": ("a",)}, r"1 class names for 2 classes"),
    ],
)
def test_spec_validation(kwargs: dict, pattern: str) -> None:
    fields = dict(name="ok", input_shape=(1, 2, 2), num_classes=2, splits=SPLITS)
    with pytest.raises(ValueError, match=pattern):
        data.DatasetSpec(**{**fields, **kwargs}, loader=_toy_loader)


def test_decorator_registered_dataset_loads() -> None:
    loader = data.register_dataset(name="blobs", input_shape=(2, 3, 3), num_classes=2)(_toy_loader)
    assert loader is _toy_loader
    spec = data.get_dataset("blobs")
    assert spec.description == "Two tiny blobs." and spec.splits == SPLITS
    x, y = data.load_dataset("blobs", "train")
    assert x.shape == (6, 2, 3, 3) and y.tolist() == [0, 1, 0, 1, 0, 1]
    assert data.load_dataset(data.DatasetRef(name="blobs"), "test")[0].shape == (4, 2, 3, 3)
    assert data.dataset_info("blobs") == data.DatasetInfo((2, 3, 3), 2)
    assert data.dataset_fingerprint("blobs") is None
    with pytest.raises(ValueError, match=r"unknown split 'valid'; valid choices: train, test"):
        data.load_dataset("blobs", "valid")
    with pytest.raises(TypeError, match=r"bare decorator"):
        data.register_dataset(_toy_loader)


def test_loader_contract_is_checked() -> None:
    def bad(split: str, path: Path | None, **kw: object):
        return torch.full((2, 1, 2, 2), 255.0), torch.zeros(2, dtype=torch.int64)

    def wrong_dtype(split: str, path: Path | None, **kw: object):
        return torch.zeros(2, 1, 2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.int64)

    data.register_dataset(name="bad", input_shape=(1, 2, 2), num_classes=2)(bad)
    data.register_dataset(name="f64")(wrong_dtype)
    with pytest.raises(data.DataError, match=r"'bad' loader.*values in \[255, 255\], not \[0, 1\]"):
        data.load_dataset("bad", "train")
    with pytest.raises(data.DataError, match=r"x must be float32"):
        data.load_dataset("f64", "train")
    # With no fixed shape, dataset_info loads the splits.
    data.register_dataset(name="free")(_toy_loader)
    assert data.dataset_info("free") == data.DatasetInfo((2, 3, 3), 2)


# --------------------------------------------------------------------------- DatasetRef


def test_ref_parse_and_plain_round_trip(tmp_path: Path) -> None:
    ref = data.DatasetRef.parse("mnist")
    assert ref == data.DatasetRef(name="mnist") and ref.plain() == "mnist"
    assert data.DatasetRef.parse(ref) is ref
    npz_ref = data.DatasetRef.parse({"name": "npz", "path": "data.npz"})
    assert npz_ref.plain() == {"name": "npz", "path": "data.npz"}
    pinned = data.DatasetRef.parse({"name": "npz", "path": "d.npz", "sha256": "AB" * 32})
    assert pinned.sha256 == "ab" * 32  # normalised to lower case
    assert pinned.plain() == {"name": "npz", "path": "d.npz", "sha256": "ab" * 32}
    for r in (ref, npz_ref, pinned):
        assert data.DatasetRef.parse(r.plain()) == r
    assert len({ref, npz_ref, pinned, data.DatasetRef.parse("mnist")}) == 3  # hashable
    with pytest.raises(Exception, match=r"frozen"):
        ref.name = "npz"
    assert data.DatasetRef.parse({"name": "npz", "path": tmp_path / "p.npz"}).path == str(
        tmp_path / "p.npz"
    )


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("npz", r"'npz' is read from a file you provide: add the 'path' key, e.g. "),
        ({"name": "cifar10"}, r"add the 'path' key, e.g. dataset: \{name: cifar10, path: "),
        ({"name": "mnist", "path": "x"}, r"'mnist' does not take a path: remove the 'path'"),
        ({"name": "emnist"}, r"unknown dataset 'emnist'.*did you mean 'mnist'"),
        ({"name": "npz", "file": "x"}, r"file: unknown key \(the keys are name, path, sha256\)"),
        ({"name": "npz", "path": "x", "sha256": "123"}, r"sha256 must be 64 hexadecimal"),
        ({"name": "mnist", "sha256": "0" * 64}, r"'sha256' pins the data at 'path'"),
        ({"path": "x.npz"}, r"name: Field required"),
        ({"name": "npz", "path": " "}, r"path must not be empty"),
        (3, r"a dataset is a name or a mapping"),
    ],
)
def test_ref_validation_errors(value: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        data.DatasetRef.parse(value)


def test_relative_paths_resolve_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    arrays = _npz_arrays()
    np.savez(tmp_path / "a" / "d.npz", **arrays)
    ref = data.DatasetRef.parse({"name": "npz", "path": "a/d.npz"})
    monkeypatch.chdir(tmp_path)
    assert ref.path == "a/d.npz" and ref.resolved_path() == tmp_path / "a" / "d.npz"
    assert data.load_dataset(ref, "test")[1].tolist() == arrays["y_test"].tolist()
    monkeypatch.chdir(tmp_path / "a")
    with pytest.raises(data.DataUnavailableError, match=r"a/d.npz does not exist.*current"):
        data.load_dataset(ref, "test")
    x, _ = data.load_dataset("npz", "test", path="d.npz")  # path= joins a bare name
    assert x.shape == arrays["x_test"].shape
    with pytest.raises(ValueError, match=r"path given twice"):
        data.load_dataset({"name": "npz", "path": "d.npz"}, "test", path="d.npz")


# --------------------------------------------------------------------------- CIFAR-10


N_REC = 7  # records per synthetic batch file (the official files hold 10,000)


def reference_decode(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Independent decoding, byte by byte: label, then 1024 R, 1024 G, 1024 B row-major."""
    images, labels = [], []
    for start in range(0, len(buf), 3073):
        labels.append(buf[start])
        img = np.zeros((3, 32, 32), dtype=np.uint8)
        for i, value in enumerate(buf[start + 1 : start + 3073]):
            img[i // 1024, (i % 1024) // 32, i % 32] = value
        images.append(img)
    return np.stack(images), np.array(labels, dtype=np.int64)


def bin_files(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in cifar10.BIN_FILES:
        records = rng.integers(0, 256, (N_REC, 3073), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, N_REC)
        out[name] = records.tobytes()
    return out


META = b"".join(f"class{i}\n".encode() for i in range(10)) + b"\n"


def make_archive(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None):
    """A gzip tar; member names are used as given. Returns the path."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def official_members(files: dict[str, bytes], meta: bytes | None = META) -> dict[str, bytes]:
    members = {f"cifar-10-batches-bin/{n}": b for n, b in files.items()}
    if meta is not None:
        members["cifar-10-batches-bin/batches.meta.txt"] = meta
    return members


def trust(monkeypatch: pytest.MonkeyPatch, archive: Path) -> None:
    """Make the synthetic archive's size and MD5 the expected ones."""
    monkeypatch.setattr(cifar10, "ARCHIVE_SIZE", archive.stat().st_size)
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", N_REC)
    return bin_files()


def write_bins(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (directory / name).write_bytes(payload)
    return directory


def expected(files: dict[str, bytes], split: str) -> tuple[np.ndarray, np.ndarray]:
    names = cifar10.TRAIN_FILES if split == "train" else (cifar10.TEST_FILE,)
    parts = [reference_decode(files[n]) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def assert_cifar(x: torch.Tensor, y: torch.Tensor, files: dict[str, bytes], split: str) -> None:
    images, labels = expected(files, split)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.is_contiguous()
    assert x.shape == (len(labels), 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(images).float() / 255)
    assert y.tolist() == labels.tolist()


@pytest.mark.parametrize("form", ["archive", "archive-dir", "batches-dir", "bin-dir"])
def test_cifar10_path_forms(
    form: str, small: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if form.startswith("archive"):
        archive = make_archive(tmp_path / "cifar-10-binary.tar.gz", official_members(small))
        trust(monkeypatch, archive)
        path = archive if form == "archive" else tmp_path
        fingerprint = hashlib.sha256(archive.read_bytes()).hexdigest()
    else:
        root = tmp_path / "root"
        write_bins(root / "cifar-10-batches-bin" if form == "batches-dir" else root, small)
        path = root
        fingerprint = hashlib.sha256(b"".join(small[n] for n in cifar10.BIN_FILES)).hexdigest()
    for split in SPLITS:
        assert_cifar(*data.load_dataset("cifar10", split, path=path), small, split)
    assert data.dataset_fingerprint({"name": "cifar10", "path": str(path)}) == fingerprint
    info = data.dataset_info({"name": "cifar10", "path": str(path)})
    assert (info.input_shape, info.num_classes) == ((3, 32, 32), 10)


def test_cifar10_channel_order_and_layout(
    small: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = np.zeros(3073, dtype=np.uint8)
    record[0] = 7
    record[1 : 1 + 1024] = 10  # red plane
    record[1 + 1024 : 1 + 2048] = 20  # green plane
    record[1 + 2048 :] = 30  # blue plane
    record[1 + 1 * 32 + 2] = 200  # red, row 1, column 2
    record[1 + 2048 + 31 * 32 + 0] = 250  # blue, row 31, column 0
    files = dict(small, **{"test_batch.bin": np.tile(record, N_REC).tobytes()})
    x, y = cifar10.load_cifar10("test", write_bins(tmp_path / "d", files))
    u8 = torch.round(x[0] * 255).to(torch.uint8)
    assert y[0].item() == 7
    assert u8[0, 0, 0] == 10 and u8[1, 5, 5] == 20 and u8[2, 5, 5] == 30
    assert u8[0, 1, 2] == 200 and u8[0, 2, 1] == 10
    assert u8[2, 31, 0] == 250 and u8[2, 0, 31] == 30


def test_cifar10_class_names(
    small: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_archive(tmp_path / "c.tar.gz", official_members(small))
    trust(monkeypatch, archive)
    assert cifar10.read_cifar10(archive, "test").class_names == tuple(
        f"class{i}" for i in range(10)
    )
    directory = write_bins(tmp_path / "d", small)
    assert cifar10.read_cifar10(directory, "test").class_names == cifar10.CLASS_NAMES
    (directory / "batches.meta.txt").write_bytes(b"dog\ncat\n")  # malformed: standard names
    assert cifar10.read_cifar10(directory, "test").class_names == cifar10.CLASS_NAMES


def test_cifar10_archive_reads_only_its_members(
    small: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work" / "inner"
    work.mkdir(parents=True)
    members = {
        "../evil": b"x",
        "/tmp/robustrank-evil-absolute": b"x",
        "cifar-10-batches-bin/../../evil.bin": small["test_batch.bin"],
        **official_members(small),
    }
    archive = make_archive(work / "cifar-10-binary.tar.gz", members)
    trust(monkeypatch, archive)

    def never(*args, **kwargs):
        raise AssertionError("the reader must not extract members to disk")

    monkeypatch.setattr(tarfile.TarFile, "extractall", never)
    monkeypatch.setattr(tarfile.TarFile, "extract", never)
    monkeypatch.chdir(work)
    before = sorted(p for p in tmp_path.rglob("*"))
    for split in SPLITS:
        assert_cifar(*data.load_dataset("cifar10", split, path=archive), small, split)
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/robustrank-evil-absolute").exists()

    # A link where a batch file should be is refused, never followed.
    linked = official_members(small)
    del linked["cifar-10-batches-bin/test_batch.bin"]
    archive = make_archive(
        tmp_path / "link.tar.gz", linked, {"cifar-10-batches-bin/test_batch.bin": "/etc/passwd"}
    )
    trust(monkeypatch, archive)
    with pytest.raises(data.DataIntegrityError, match=r"test_batch.bin is not a regular file"):
        cifar10.read_cifar10(archive, "test")


def test_cifar10_archive_checksum_and_size_mismatch(
    small: dict[str, bytes], tmp_path: Path
) -> None:
    archive = make_archive(tmp_path / "cifar-10-binary.tar.gz", official_members(small))
    # Real published constants: the synthetic archive is refused before it is read.
    with pytest.raises(data.DataIntegrityError) as info:
        data.load_dataset("cifar10", "test", path=archive)
    msg = str(info.value)
    assert str(archive) in msg and "170,052,171" in msg and "Fix: download" in msg
    size = archive.stat().st_size
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cifar10, "ARCHIVE_SIZE", size)  # right size, wrong content
        with pytest.raises(data.DataIntegrityError) as info:
            data.load_dataset("cifar10", "train", path=tmp_path)
    found = hashlib.md5(archive.read_bytes()).hexdigest()
    msg = str(info.value)
    assert f"MD5 {found} does not match the published MD5 c32a1d4ab5d03f1284b67883e8d87530" in msg
    assert str(archive) in msg and "Fix: download cifar-10-binary.tar.gz" in msg


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_cifar10_pickled_distribution_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    batch = pickle.dumps(_Evil(marker))
    members = {f"cifar-10-batches-py/{n}": batch for n in ("data_batch_1", "test_batch")}
    named = make_archive(tmp_path / "cifar-10-python.tar.gz", members)
    renamed = make_archive(tmp_path / "renamed.tar.gz", members)
    extracted = tmp_path / "extracted"
    (extracted / "cifar-10-batches-py").mkdir(parents=True)
    (extracted / "cifar-10-batches-py" / "test_batch").write_bytes(batch)
    for path in (named, renamed, tmp_path, extracted):
        with pytest.raises(data.DataUnavailableError) as info:
            data.load_dataset("cifar10", "test", path=path)
        msg = str(info.value)
        assert "Python (pickled) distribution" in msg and "cifar-10-binary.tar.gz" in msg
    assert not marker.exists()


def _damage(files: dict[str, bytes], name: str, payload: bytes) -> dict[str, bytes]:
    return {**files, name: payload}


@pytest.mark.parametrize(
    ("name", "change", "pattern"),
    [
        ("data_batch_3.bin", lambda b: b[:-1], r"not a whole number of 3073-byte records"),
        ("test_batch.bin", lambda b: b + b[:3073], r"8 records, but every official"),
        ("test_batch.bin", lambda b: b"", r"0 records"),
        ("data_batch_1.bin", lambda b: b[:3073] + b"\x0a" + b[3074:], r"record 1 has label 10"),
    ],
    ids=["truncated", "extra-record", "empty", "bad-label"],
)
def test_cifar10_damaged_files(
    small: dict[str, bytes], tmp_path: Path, name: str, change, pattern: str
) -> None:
    directory = write_bins(tmp_path / "d", _damage(small, name, change(small[name])))
    split = "test" if name == "test_batch.bin" else "train"
    with pytest.raises(data.DataIntegrityError, match=pattern) as info:
        data.load_dataset("cifar10", split, path=directory)
    assert str(directory / name) in str(info.value) and "Fix:" in str(info.value)


def test_cifar10_damaged_archive_member(
    small: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _damage(small, "test_batch.bin", small["test_batch.bin"][:-5])
    archive = make_archive(tmp_path / "a.tar.gz", official_members(files))
    trust(monkeypatch, archive)
    with pytest.raises(data.DataIntegrityError, match=r"member cifar-10-batches-bin/test_batch"):
        cifar10.read_cifar10(archive, "test")
    del files["test_batch.bin"]
    archive = make_archive(tmp_path / "b.tar.gz", official_members(files))
    trust(monkeypatch, archive)
    with pytest.raises(data.DataIntegrityError, match=r"missing member\(s\) .*test_batch.bin"):
        cifar10.read_cifar10(archive, "test")


def test_cifar10_official_record_count_enforced(tmp_path: Path) -> None:
    directory = write_bins(tmp_path / "d", bin_files())  # 7 records, the default wants 10,000
    with pytest.raises(data.DataIntegrityError, match=r"7 records.*holds 10,000"):
        data.load_dataset("cifar10", "test", path=directory)


def test_cifar10_missing_data_is_explained(small: dict[str, bytes], tmp_path: Path) -> None:
    partial = write_bins(tmp_path / "p", {n: small[n] for n in cifar10.TRAIN_FILES})
    with pytest.raises(data.DataUnavailableError, match=r"missing in .*: test_batch.bin"):
        data.load_dataset("cifar10", "train", path=partial)
    with pytest.raises(data.DataUnavailableError, match=r"does not exist"):
        cifar10.read_cifar10(tmp_path / "nowhere", "train")
    with pytest.raises(data.DataUnavailableError, match=r"single batch file: pass the directory"):
        cifar10.read_cifar10(partial / "data_batch_1.bin", "train")


# --------------------------------------------------------------------------- npz


def _npz_arrays(dtype: type = np.uint8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def images(n: int) -> np.ndarray:
        u8 = rng.integers(0, 256, (n, 3, 4, 5), dtype=np.uint8)
        return u8 if dtype == np.uint8 else (u8 / 255).astype(dtype)

    return {
        "x_train": images(6),
        "y_train": rng.integers(0, 3, 6).astype(np.int32),
        "x_test": images(4),
        "y_test": np.array([0, 4, 1, 2], dtype=np.uint8),
    }


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_npz_loads(dtype: type, tmp_path: Path) -> None:
    arrays = _npz_arrays(dtype)
    path = tmp_path / "d.npz"
    (np.savez if dtype != np.float64 else np.savez_compressed)(path, **arrays)
    for split in SPLITS:
        x, y = data.load_dataset({"name": "npz", "path": str(path)}, split)
        ref = arrays[f"x_{split}"]
        ref = ref / 255 if dtype == np.uint8 else ref
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, torch.from_numpy(ref.astype(np.float32)))
        assert y.tolist() == arrays[f"y_{split}"].tolist()
    assert data.dataset_info({"name": "npz", "path": str(path)}) == data.DatasetInfo((3, 4, 5), 5)


def test_npz_info_reads_no_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **_npz_arrays())
    loaded: list[str] = []
    real = npz._array
    monkeypatch.setattr(npz, "_array", lambda f, p, key: loaded.append(key) or real(f, p, key))
    assert npz.npz_info(path) == data.DatasetInfo((3, 4, 5), 5)
    assert sorted(loaded) == ["y_test", "y_train"]


def _npz_cases() -> dict[str, tuple[dict[str, np.ndarray], str, str]]:
    """Invalid files: name -> (arrays, key named in the error, error pattern)."""
    a = _npz_arrays()
    f = _npz_arrays(np.float32)
    cases = {
        "missing-key": (
            {k: v for k, v in a.items() if k != "y_test"},
            "",
            r"missing key\(s\) y_test \(keys present: x_train, y_train, x_test\)",
        ),
        "3d": ({**a, "x_train": a["x_train"][:, 0]}, "x_train", r"3-D .*x_train=x\[:, None\]"),
        "nhwc": (
            {**a, "x_train": np.zeros((6, 4, 5, 3), np.uint8)},
            "x_train",
            r"channels-last .*x_train=x.transpose\(0, 3, 1, 2\)",
        ),
        "2d": ({**a, "x_test": np.zeros((4, 60), np.uint8)}, "x_test", r"has shape \(4, 60\)"),
        "chw-mismatch": (
            {**a, "x_test": np.zeros((4, 3, 5, 4), np.uint8)},
            "x_test",
            r"C x H x W \(3, 5, 4\) but x_train has \(3, 4, 5\)",
        ),
        "int-x": ({**a, "x_train": a["x_train"].astype(np.int16)}, "x_train", r"dtype int16"),
        "nan": (
            {**f, "x_test": np.where(f["x_test"] > 0.5, np.nan, f["x_test"])},
            "x_test",
            r"NaN or infinite",
        ),
        "range": ({**f, "x_test": f["x_test"] * 255}, "x_test", r"outside \[0, 1\].*x / 255"),
        "float-y": ({**a, "y_test": a["y_test"].astype(np.float32)}, "y_test", r"dtype float32"),
        "2d-y": ({**a, "y_test": a["y_test"][:, None]}, "y_test", r"shape \(4, 1\)"),
        "short-y": ({**a, "y_test": a["y_test"][:3]}, "y_test", r"3 labels for 4 images"),
        "negative": ({**a, "y_test": np.array([0, -1, 1, 2])}, "y_test", r"negative label -1"),
        "empty": (
            {**a, "x_test": a["x_test"][:0], "y_test": a["y_test"][:0]},
            "x_test",
            r"holds no examples",
        ),
        "object-x": (
            {**a, "x_test": np.array([None] * 4, dtype=object)},
            "x_test",
            r"object array .*unpickling",
        ),
        "object-y": (
            {**a, "y_test": np.array([1, "a", None, 2], dtype=object)},
            "y_test",
            r"without unpickling",
        ),
    }
    return cases


NPZ_CASES = _npz_cases()


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_npz_validation_errors(case: str, tmp_path: Path) -> None:
    arrays, key, pattern = NPZ_CASES[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # object arrays are pickled inside: reading must refuse them
    with pytest.raises(data.DataIntegrityError, match=pattern) as info:
        data.load_dataset("npz", "test", path=path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {key}".rstrip(": ")) and "Fix:" in msg


def test_npz_not_an_archive(tmp_path: Path) -> None:
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(data.DataIntegrityError, match=r"single array, not an .npz archive"):
        data.load_dataset("npz", "train", path=single)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(data.DataIntegrityError, match=r"junk.npz: cannot read as .npz"):
        data.load_dataset("npz", "train", path=junk)
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"x_train": 1}))
    with pytest.raises(data.DataIntegrityError, match=r"cannot read as .npz"):
        data.load_dataset("npz", "train", path=pickled)


def test_npz_fingerprint_and_pinned_sha256(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **_npz_arrays(seed=0))
    ref = data.DatasetRef(name="npz", path=str(path))
    first = data.dataset_fingerprint(ref)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.dataset_fingerprint("mnist") is None
    pinned = ref.model_copy(update={"sha256": first})
    assert data.load_dataset(pinned, "train")[0].shape == (6, 3, 4, 5)

    np.savez(path, **_npz_arrays(seed=1))  # same shapes, new content
    second = data.dataset_fingerprint(ref)
    assert second != first
    with pytest.raises(data.DataIntegrityError) as info:
        data.load_dataset(pinned, "train")
    msg = str(info.value)
    assert f"the data at {path} changed" in msg and first in msg and second in msg
