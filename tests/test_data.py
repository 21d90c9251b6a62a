"""Dataset loaders: tiny files in each published format, read from disk and from memory://."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.training.datasets import (
    DEFAULT_DATASET,
    DataError,
    Dataset,
    _stratified_split,
    detect_format,
    load_dataset,
)
from evolve.training.train import to_device

# ---------------------------------------------------------------------------------------------------------
# writers for the published formats


def images(n: int, c: int, h: int, w: int, seed: int) -> np.ndarray:
    """Random uint8 images (N, C, H, W); distinct with overwhelming probability."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def labels(n: int, k: int, seed: int) -> np.ndarray:
    y = np.arange(n) % k  # every class present
    return np.random.default_rng(seed).permutation(y).astype(np.uint8)


def cifar10_batch(x: np.ndarray, y: np.ndarray) -> bytes:
    rows = np.concatenate([y[:, None].astype(np.uint8), x.reshape(len(x), -1)], axis=1)
    return rows.tobytes()


def cifar100_batch(x: np.ndarray, fine: np.ndarray) -> bytes:
    coarse = (fine // 5).astype(np.uint8)
    rows = np.concatenate([coarse[:, None], fine[:, None].astype(np.uint8), x.reshape(len(x), -1)], axis=1)
    return rows.tobytes()


def idx_images(x: np.ndarray) -> bytes:  # x: (N, H, W)
    return np.array([0x803, *x.shape], dtype=">u4").tobytes() + x.astype(np.uint8).tobytes()


def idx_labels(y: np.ndarray) -> bytes:
    return np.array([0x801, len(y)], dtype=">u4").tobytes() + y.astype(np.uint8).tobytes()


def png(img: np.ndarray) -> bytes:  # img: (C, H, W)
    from PIL import Image

    arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_files(root: str, files: dict[str, bytes]) -> None:
    """Write name -> bytes under root (a local path or any fsspec URL)."""
    fs, base = fsspec.core.url_to_fs(root)
    for name, data in files.items():
        path = f"{base.rstrip('/')}/{name}"
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# fixtures: one small dataset per format


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        yield str(tmp_path / "data")
        return
    url = f"memory://evolve-tests/{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


TRAIN_PER_BATCH, N_TEST = 12, 20


@pytest.fixture
def cifar10():
    xs = [images(TRAIN_PER_BATCH, 3, 32, 32, seed=b) for b in range(5)]
    ys = [labels(TRAIN_PER_BATCH, 10, seed=b) for b in range(5)]
    x_test, y_test = images(N_TEST, 3, 32, 32, seed=99), labels(N_TEST, 10, seed=99)
    files = {f"data_batch_{b + 1}.bin": cifar10_batch(xs[b], ys[b]) for b in range(5)}
    files["test_batch.bin"] = cifar10_batch(x_test, y_test)
    files["batches.meta.txt"] = "\n".join(f"class{i}" for i in range(10)).encode() + b"\n\n"
    return files, np.concatenate(xs), np.concatenate(ys), x_test, y_test


@pytest.fixture
def cifar100():
    x, y = images(60, 3, 32, 32, seed=1), labels(60, 100, seed=1)
    x_test, y_test = images(N_TEST, 3, 32, 32, seed=2), labels(N_TEST, 100, seed=2)
    files = {"train.bin": cifar100_batch(x, y), "test.bin": cifar100_batch(x_test, y_test)}
    return files, x, y, x_test, y_test


@pytest.fixture
def mnist():
    x, y = images(50, 1, 28, 28, seed=3)[:, 0], labels(50, 10, seed=3)
    x_test, y_test = images(N_TEST, 1, 28, 28, seed=4)[:, 0], labels(N_TEST, 10, seed=4)
    files = {
        "train-images-idx3-ubyte": idx_images(x), "train-labels-idx1-ubyte": idx_labels(y),
        "t10k-images-idx3-ubyte": idx_images(x_test), "t10k-labels-idx1-ubyte": idx_labels(y_test),
    }
    return files, x[:, None], y, x_test[:, None], y_test


def gz(files: dict[str, bytes]) -> dict[str, bytes]:
    return {f"{name}.gz": gzip.compress(data) for name, data in files.items()}


def raw_pixels(ds: Dataset, x: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """Undo the normalisation: back to the file's integer pixels."""
    mean = np.array(ds.mean)[None, :, None, None]
    std = np.array(ds.std)[None, :, None, None]
    return np.rint((x.astype(np.float64) * std + mean) * scale).astype(np.int64)


def check_roundtrip(ds: Dataset, x_pool, y_pool, x_test, y_test) -> None:
    """Splits are disjoint, cover the pool, keep the test set as published, labels stay with images."""
    assert len(ds.y_train) + len(ds.y_val) == len(y_pool)
    assert len(ds.y_test) == len(y_test)
    back = np.concatenate([raw_pixels(ds, ds.x_train), raw_pixels(ds, ds.x_val)])
    got = {row.tobytes(): int(lab) for row, lab in zip(back.astype(np.uint8), np.concatenate([ds.y_train, ds.y_val]))}
    want = {row.tobytes(): int(lab) for row, lab in zip(x_pool, y_pool)}
    assert got == want  # same images, each with its own label, nothing lost or duplicated
    train_rows = {r.tobytes() for r in raw_pixels(ds, ds.x_train).astype(np.uint8)}
    val_rows = {r.tobytes() for r in raw_pixels(ds, ds.x_val).astype(np.uint8)}
    assert not train_rows & val_rows
    np.testing.assert_array_equal(raw_pixels(ds, ds.x_test), x_test)
    np.testing.assert_array_equal(ds.y_test, y_test)


def check_arrays(ds: Dataset, shape: tuple[int, int, int]) -> None:
    assert ds.input_shape == shape
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == shape and x.shape[0] == y.shape[0]
        assert x.flags.c_contiguous
    # normalised with the train split's own per-channel statistics
    flat = ds.x_train.transpose(1, 0, 2, 3).reshape(shape[0], -1).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=1), 1.0, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# embedded


def test_default_is_the_embedded_28x28_mnist_subset():
    assert DEFAULT_DATASET == "mnist-mini"
    ds = load_dataset(DEFAULT_DATASET)
    check_arrays(ds, (1, 28, 28))
    assert ds.num_classes == 10
    assert ds.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert np.bincount(ds.y_test).tolist() == [100] * 10  # stratified
    assert np.bincount(ds.y_val).tolist() == [40] * 10
    assert abs(ds.mean[0] - 0.1307) < 0.01 and abs(ds.std[0] - 0.3081) < 0.01  # MNIST's familiar stats


def test_digits_is_honest_8x8():
    ds = load_dataset("digits", seed=3)
    check_arrays(ds, (1, 8, 8))
    assert ds.num_classes == 10
    assert sum(ds.sizes().values()) == 1797


def test_embedded_splits_fixed_by_seed_and_test_fixed_for_all_seeds():
    a, b, c = load_dataset("digits", seed=1), load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.y_val, c.y_val) or not np.array_equal(a.x_val, c.x_val)
    # the carved test set is the same whatever the seed (normalisation aside: train stats differ)
    np.testing.assert_array_equal(a.y_test, c.y_test)
    np.testing.assert_array_equal(raw_pixels(a, a.x_test, 16), raw_pixels(c, c.x_test, 16))


def test_limit_and_val_fraction():
    ds = load_dataset("digits", limit=100, val_fraction=0.2)
    assert ds.sizes() == {"train": 80, "val": 20, "test": 100}
    none = load_dataset("digits", val_fraction=0.0, limit=50)
    assert none.sizes()["val"] == 0 and none.x_val.shape == (0, 1, 8, 8)


# ---------------------------------------------------------------------------------------------------------
# CIFAR


def test_cifar10_folder(root, cifar10):
    files, x, y, x_test, y_test = cifar10
    write_files(root, files)
    ds = load_dataset(f"cifar10:{root}", seed=5)
    check_arrays(ds, (3, 32, 32))
    assert ds.name == "cifar10" and ds.num_classes == 10 and ds.source == root
    assert ds.sizes() == {"train": 54, "val": 6, "test": 20}
    assert ds.class_names == tuple(f"class{i}" for i in range(10))
    check_roundtrip(ds, x, y, x_test, y_test)
    assert detect_format(root) == "cifar10"
    bare = load_dataset(root, seed=5)
    np.testing.assert_array_equal(bare.x_val, ds.x_val)


def test_cifar10_tar_gz_of_the_published_folder(root, cifar10):
    files, x, y, x_test, y_test = cifar10
    archive = tar_gz({f"cifar-10-batches-bin/{k}": v for k, v in files.items()})
    write_files(root, {"cifar-10-binary.tar.gz": archive})
    url = f"{root}/cifar-10-binary.tar.gz"
    ds = load_dataset(f"cifar10:{url}")
    check_roundtrip(ds, x, y, x_test, y_test)
    assert detect_format(url) == "cifar10"
    assert load_dataset(url).sizes() == ds.sizes()


def test_cifar100_folder_and_tar(root, cifar100):
    files, x, y, x_test, y_test = cifar100
    write_files(root, {f"cifar-100-binary/{k}": v for k, v in files.items()})
    write_files(root, {"c100.tar.gz": tar_gz({f"cifar-100-binary/{k}": v for k, v in files.items()})})
    folder = f"{root}/cifar-100-binary"
    ds = load_dataset(f"cifar100:{folder}")
    check_arrays(ds, (3, 32, 32))
    assert ds.num_classes == 100 and ds.name == "cifar100"
    check_roundtrip(ds, x, y, x_test, y_test)  # fine labels, not coarse
    assert detect_format(folder) == "cifar100"
    assert detect_format(f"{root}/c100.tar.gz") == "cifar100"
    from_tar = load_dataset(f"{root}/c100.tar.gz")
    np.testing.assert_array_equal(from_tar.x_train, ds.x_train)


def test_cifar_split_determinism_and_disjointness(tmp_path, cifar10):
    files, *_ = cifar10
    write_files(str(tmp_path), files)
    a, b = load_dataset(str(tmp_path), seed=7), load_dataset(str(tmp_path), seed=7)
    c = load_dataset(str(tmp_path), seed=8)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert not np.array_equal(raw_pixels(a, a.x_val), raw_pixels(c, c.x_val))
    np.testing.assert_array_equal(a.y_test, c.y_test)  # the published test set, untouched by the seed
    lim = load_dataset(str(tmp_path), seed=7, limit=30)
    assert lim.sizes() == {"train": 27, "val": 3, "test": 20}


# ---------------------------------------------------------------------------------------------------------
# MNIST IDX


@pytest.mark.parametrize("compressed", [False, True])
def test_mnist_idx(root, mnist, compressed):
    files, x, y, x_test, y_test = mnist
    write_files(root, gz(files) if compressed else files)
    ds = load_dataset(f"mnist:{root}", seed=2)
    check_arrays(ds, (1, 28, 28))
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.sizes() == {"train": 45, "val": 5, "test": 20}
    check_roundtrip(ds, x, y, x_test, y_test)
    assert detect_format(root) == "mnist"
    np.testing.assert_array_equal(load_dataset(root, seed=2).x_val, ds.x_val)


def test_mnist_kaggle_style_names(tmp_path, mnist):
    files, x, y, x_test, y_test = mnist
    write_files(str(tmp_path), {k.replace("-idx", ".idx"): v for k, v in files.items()})
    check_roundtrip(load_dataset(str(tmp_path)), x, y, x_test, y_test)


# ---------------------------------------------------------------------------------------------------------
# Parquet


def image_table(x: np.ndarray, y: np.ndarray, kind: str, image: str = "image", label: str = "label") -> pa.Table:
    if kind == "png":
        col = pa.array([png(img) for img in x], type=pa.binary())
    elif kind == "hf":
        col = pa.array([{"bytes": png(img), "path": None} for img in x],
                       type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    elif kind == "nested":  # (H, W, C) lists, as numpy arrays of images export
        col = pa.array([img.transpose(1, 2, 0).tolist() for img in x])
    else:
        raise AssertionError(kind)
    return pa.table({image: col, label: pa.array(y.astype(np.int64))})


@pytest.mark.parametrize("kind", ["png", "hf", "nested"])
def test_parquet_train_and_test_files(root, kind):
    x, y = images(40, 3, 8, 8, seed=5), labels(40, 4, seed=5)
    x_test, y_test = images(10, 3, 8, 8, seed=6), labels(10, 4, seed=6)
    write_files(root, {
        "data/train-00000-of-00001.parquet": parquet_bytes(image_table(x, y, kind)),
        "data/test-00000-of-00001.parquet": parquet_bytes(image_table(x_test, y_test, kind)),
    })
    ds = load_dataset(f"parquet:{root}", seed=1)
    check_arrays(ds, (3, 8, 8))
    assert ds.name == "parquet" and ds.num_classes == 4
    assert ds.sizes() == {"train": 36, "val": 4, "test": 10}
    check_roundtrip(ds, x, y, x_test, y_test)
    assert detect_format(root) == "parquet"
    np.testing.assert_array_equal(load_dataset(root, seed=1).y_train, ds.y_train)


def test_parquet_grey_png_custom_columns_and_hf_class_names(tmp_path):
    x, y = images(30, 1, 12, 12, seed=7), labels(30, 3, seed=7)
    table = image_table(x, y, "hf", image="img", label="fine_label")
    meta = {"info": {"features": {"fine_label": {"names": ["a", "b", "c"], "_type": "ClassLabel"}}}}
    table = table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()})
    path = tmp_path / "train.parquet"
    path.write_bytes(parquet_bytes(table))
    ds = load_dataset(f"parquet[image=img,label=fine_label]:{path}")
    check_arrays(ds, (1, 12, 12))
    assert ds.class_names == ("a", "b", "c") and ds.num_classes == 3
    assert sum(ds.sizes().values()) == 30  # no test file: a fixed test split is carved


def test_parquet_flat_arrays_with_shape_and_string_labels(tmp_path):
    x = images(20, 3, 4, 5, seed=8)
    names = np.array(["cat", "dog"])[labels(20, 2, seed=8)]
    flat = [img.transpose(1, 2, 0).reshape(-1).tolist() for img in x]
    (tmp_path / "t.parquet").write_bytes(parquet_bytes(pa.table({"image": flat, "label": names.tolist()})))
    ds = load_dataset(f"parquet[shape=4x5x3]:{tmp_path}")
    check_arrays(ds, (3, 4, 5))
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    with pytest.raises(DataError, match="shape="):
        load_dataset(f"parquet:{tmp_path}")


# ---------------------------------------------------------------------------------------------------------
# errors: DataError, one line, naming the file or field


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_path(root):
    with pytest.raises(DataError) as exc:
        load_dataset(f"cifar10:{root}/nowhere")
    assert "nowhere" in one_line(exc)
    with pytest.raises(DataError, match="nowhere"):
        load_dataset(f"{root}/nowhere")


def test_unknown_spec():
    for spec in ("imagenet", "cifar11:/tmp/x", ""):
        with pytest.raises(DataError) as exc:
            load_dataset(spec)
        one_line(exc)
    with pytest.raises(DataError, match="imagenet"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="cifar11"):
        load_dataset("cifar11:/tmp/x")


def test_truncated_cifar(root, cifar10):
    files, *_ = cifar10
    files = dict(files, **{"data_batch_3.bin": files["data_batch_3.bin"][:-100]})
    write_files(root, files)
    with pytest.raises(DataError) as exc:
        load_dataset(root)
    assert "data_batch_3.bin" in one_line(exc) and "truncated" in str(exc.value)


def test_cifar_bad_label_byte(tmp_path, cifar100):
    files, *_ = cifar100
    bad = bytearray(files["test.bin"])
    bad[3074 * 2 + 1] = 200  # fine label of record 2
    write_files(str(tmp_path), dict(files, **{"test.bin": bytes(bad)}))
    with pytest.raises(DataError, match=r"test\.bin.*record 2.*200"):
        load_dataset(f"cifar100:{tmp_path}")


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_bad_magic(root, mnist, compressed):
    files, *_ = mnist
    files = dict(files, **{"t10k-labels-idx1-ubyte": b"\x00\x00\x08\x03" + files["t10k-labels-idx1-ubyte"][4:]})
    write_files(root, gz(files) if compressed else files)
    with pytest.raises(DataError) as exc:
        load_dataset(f"mnist:{root}")
    msg = one_line(exc)
    assert "t10k-labels-idx1-ubyte" in msg and "0x00000803" in msg


def test_idx_size_mismatch_and_count_mismatch(tmp_path, mnist):
    files, *_ = mnist
    write_files(str(tmp_path / "a"), dict(files, **{"train-images-idx3-ubyte": files["train-images-idx3-ubyte"][:-1]}))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*header says"):
        load_dataset(str(tmp_path / "a"))
    short = idx_labels(np.zeros(49, dtype=np.uint8))
    write_files(str(tmp_path / "b"), dict(files, **{"train-labels-idx1-ubyte": short}))
    with pytest.raises(DataError, match="50 images.*49 labels"):
        load_dataset(str(tmp_path / "b"))


def test_parquet_missing_label_column(root):
    x, y = images(5, 1, 4, 4, seed=0), labels(5, 2, seed=0)
    write_files(root, {"train.parquet": parquet_bytes(image_table(x, y, "png", label="target"))})
    with pytest.raises(DataError) as exc:
        load_dataset(f"parquet:{root}")
    msg = one_line(exc)
    assert "train.parquet" in msg and "'label'" in msg and "target" in msg


def test_undetectable_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="cannot tell"):
        load_dataset(str(tmp_path))


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="train.parquet"):
        load_dataset(str(tmp_path))


# ---------------------------------------------------------------------------------------------------------
# splits as a property, and the device copy


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=80), st.floats(0.0, 0.9), st.integers(0, 2**32 - 1))
def test_stratified_split_partitions(y, fraction, seed):
    y = np.array(y)
    keep, carved = _stratified_split(y, fraction, np.random.default_rng(seed))
    assert sorted(np.concatenate([keep, carved]).tolist()) == list(range(len(y)))
    if fraction > 0 and len(y) >= 2:
        assert len(carved) == min(max(int(np.floor(fraction * len(y) + 0.5)), 1), len(y) - 1)
        for k in np.unique(y):  # each class gets its share, rounded up or down
            assert abs((y[carved] == k).sum() - fraction * (y == k).sum()) < 1 + 1e-9
    elif fraction == 0:
        assert len(carved) == 0
    again = _stratified_split(y, fraction, np.random.default_rng(seed))
    assert np.array_equal(again[0], keep) and np.array_equal(again[1], carved)


def test_to_device_cpu():
    import torch

    ds = load_dataset("digits", limit=60)
    dd = to_device(ds, "cpu")
    assert dd.device == torch.device("cpu") and dd.input_shape == (1, 8, 8) and dd.num_classes == 10
    assert dd.x_train.dtype == torch.float32 and dd.y_train.dtype == torch.int64
    assert tuple(dd.x_val.shape) == ds.x_val.shape and tuple(dd.y_test.shape) == ds.y_test.shape
    np.testing.assert_array_equal(dd.x_test.numpy(), ds.x_test)



def test_parquet_jpeg_and_palette_png(tmp_path):
    from PIL import Image

    def encode(im, fmt):
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        return buf.getvalue()

    rgb = images(6, 3, 16, 16, seed=9)
    jpegs = [encode(Image.fromarray(img.transpose(1, 2, 0)), "JPEG") for img in rgb]
    palette = [encode(Image.fromarray(img.transpose(1, 2, 0)).convert("P"), "PNG") for img in rgb[:4]]
    y = pa.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1], type=pa.int64())
    (tmp_path / "train.parquet").write_bytes(parquet_bytes(pa.table({"image": jpegs + palette, "label": y})))
    ds = load_dataset(str(tmp_path))
    assert ds.input_shape == (3, 16, 16) and ds.num_classes == 2  # colour: one colour image makes all RGB


def test_parquet_bad_image_row_and_path_only_struct(tmp_path):
    good = png(images(1, 1, 4, 4, seed=0)[0])
    (tmp_path / "a").mkdir()
    table = pa.table({"image": [good, b"garbage", good], "label": [0, 1, 0]})
    (tmp_path / "a" / "train.parquet").write_bytes(parquet_bytes(table))
    with pytest.raises(DataError, match=r"train\.parquet: row 1 of column 'image'"):
        load_dataset(str(tmp_path / "a"))
    (tmp_path / "b").mkdir()
    col = pa.array([{"bytes": None, "path": "x.png"}], type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    (tmp_path / "b" / "train.parquet").write_bytes(parquet_bytes(pa.table({"image": col, "label": [0]})))
    with pytest.raises(DataError, match="no bytes"):
        load_dataset(str(tmp_path / "b"))


def test_parquet_published_validation_split_is_used_as_is(tmp_path):
    parts = {split: (images(n, 1, 6, 6, seed=i), labels(n, 3, seed=i))
             for i, (split, n) in enumerate([("train", 30), ("validation", 9), ("test", 6)])}
    for split, (x, y) in parts.items():
        (tmp_path / f"{split}-00000-of-00001.parquet").write_bytes(parquet_bytes(image_table(x, y, "png")))
    ds = load_dataset(str(tmp_path), val_fraction=0.5)
    assert ds.sizes() == {"train": 30, "val": 9, "test": 6}
    np.testing.assert_array_equal(ds.y_val, parts["validation"][1])
