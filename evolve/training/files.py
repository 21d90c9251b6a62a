"""Dataset files read through fsspec: CIFAR-10/100 binary, MNIST IDX files, Parquet image tables.

Each loader takes a URL (a folder, a file or a ``.tar.gz`` archive; local, ``memory://``,
``s3://``, ``gs://``), the filesystem's storage options and the format's bracketed options, and
returns a :class:`Raw`: uint8 pixels and integer labels before splitting, which
``evolve.training.datasets.load_dataset`` splits and normalises. Anything wrong raises :class:`DataError` with
one line naming the file or field and the bad value.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np

FORMATS = ("cifar10", "cifar100", "mnist", "parquet")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(ValueError):
    """The data could not be found or is not in the expected format."""


@dataclass
class Raw:
    """What a loader returns: uint8 pixels (N, C, H, W), integer labels, before splitting."""

    name: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int
    x_val: np.ndarray | None = None  # a published validation split, used as is
    y_val: np.ndarray | None = None
    scale: float = 255.0  # the pixel value that means "white"
    class_names: tuple[str, ...] | None = None


def reject_options(options: dict[str, str], fmt: str, allowed: tuple[str, ...] = ()) -> None:
    bad = sorted(set(options) - set(allowed))
    if bad:
        allowed_text = ", ".join(allowed) if allowed else "none"
        raise DataError(f"unknown option {bad[0]!r} for {fmt} (allowed: {allowed_text})")


# ---------------------------------------------------------------------------------------------------------
# files through fsspec


class _Source:
    """A folder, a single file, or a .tar.gz archive, addressed by member names."""

    def __init__(self, url: str, storage_options: dict[str, Any]):
        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ImportError, ValueError, OSError) as exc:
            raise DataError(f"cannot open {url}: {exc}") from exc
        self.root = root.rstrip("/") or root
        self._tar: dict[str, bytes] | None = None
        try:
            if not self.fs.exists(self.root):
                raise DataError(f"no such file or folder: {url}")
            self.is_dir = self.fs.isdir(self.root)
        except DataError:
            raise
        except Exception as exc:  # backends raise their own types (credentials, network, ...)
            raise DataError(f"cannot open {url}: {exc}") from exc
        self.is_tar = not self.is_dir and self.root.lower().endswith((".tar.gz", ".tgz", ".tar"))

    def display(self, member: str) -> str:
        if self.is_tar:
            return f"{self.url}!{member}"
        if member == self.root:
            return self.url
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        if protocol in ("file", "local"):
            return member
        return self.fs.unstrip_protocol(member)

    def members(self, maxdepth: int = 3) -> list[str]:
        """Every file: full paths (folder/file) or member names (archive)."""
        try:
            if self.is_tar:
                return sorted(self._tar_members())
            if not self.is_dir:
                return [self.root]
            return sorted(self.fs.find(self.root, maxdepth=maxdepth))
        except DataError:
            raise
        except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"cannot list {self.url}: {exc}") from exc

    def read(self, member: str) -> bytes:
        try:
            if self.is_tar:
                return self._tar_members()[member]
            with self.fs.open(member, "rb") as f:
                return f.read()
        except Exception as exc:  # backends raise their own types (credentials, network, ...)
            raise DataError(f"cannot read {self.display(member)}: {exc}") from exc

    def _tar_members(self) -> dict[str, bytes]:
        if self._tar is None:
            members: dict[str, bytes] = {}
            try:
                with self.fs.open(self.root, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                    for info in tar:
                        if info.isfile():
                            data = tar.extractfile(info)
                            members[info.name] = data.read() if data is not None else b""
            except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
                raise DataError(f"cannot read archive {self.url}: {exc}") from exc
            self._tar = members
        return self._tar

    def find(self, basename: str, members: list[str] | None = None) -> str | None:
        """The one member whose file name is ``basename`` (None if none; DataError if several)."""
        hits = [m for m in (members if members is not None else self.members()) if _basename(m) == basename]
        if len(hits) > 1:
            raise DataError(f"{self.url}: several files named {basename!r}: {', '.join(hits[:3])}")
        return hits[0] if hits else None


def _basename(path: str) -> str:
    return PurePosixPath(path.rstrip("/")).name


def detect_format(url: str, *, storage_options: dict[str, Any] | None = None) -> str:
    """Tell a URL's dataset format from its contents: one of :data:`FORMATS`."""
    src = _Source(url, dict(storage_options or {}))
    if not src.is_dir and not src.is_tar:
        name = _basename(src.root).lower()
        if name.endswith(".parquet"):
            return "parquet"
        raise DataError(f"cannot tell the dataset format of file {url}: expected a folder, a .tar.gz, "
                        f"or a .parquet file")
    members = src.members()
    names = {_basename(m) for m in members}
    if "data_batch_1.bin" in names:
        return "cifar10"
    if "train.bin" in names:
        return "cifar100"
    if any(_idx_role(n) for n in names):
        return "mnist"
    if any(n.lower().endswith(".parquet") for n in names):
        return "parquet"
    shown = ", ".join(sorted(names)[:5]) or "nothing"
    raise DataError(f"cannot tell the dataset format of {url}: no data_batch_1.bin (CIFAR-10), train.bin "
                    f"(CIFAR-100), IDX files (MNIST) or *.parquet; found {shown}")


# ---------------------------------------------------------------------------------------------------------
# CIFAR binary version


def _cifar_records(src: _Source, member: str, label_bytes: int, label_limits: tuple[int, ...]) -> tuple[
        np.ndarray, np.ndarray]:
    data = src.read(member)
    record = label_bytes + 3072
    where = src.display(member)
    if len(data) == 0 or len(data) % record:
        raise DataError(f"{where}: {len(data):,} bytes is not a whole number of {record}-byte CIFAR records "
                        f"(truncated or not the binary version?)")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    for i, top in enumerate(label_limits):
        bad = np.flatnonzero(rows[:, i] >= top)
        if bad.size:
            raise DataError(f"{where}: record {int(bad[0])} has label byte {int(rows[bad[0], i])}, "
                            f"expected 0..{top - 1}")
    x = rows[:, label_bytes:].reshape(-1, 3, 32, 32)
    return x, rows[:, label_bytes - 1].astype(np.int64)


def _read_names(src: _Source, members: list[str], basename: str, count: int) -> tuple[str, ...] | None:
    member = src.find(basename, members)
    if member is None:
        return None
    names = tuple(line.strip() for line in src.read(member).decode("utf-8", "replace").splitlines() if line.strip())
    return names if len(names) == count else None


def _load_cifar10(url: str, so: dict[str, Any], options: dict[str, str]) -> Raw:
    reject_options(options, "cifar10")
    src = _Source(url, so)
    members = src.members()
    batches = sorted((m for m in members if re.fullmatch(r"data_batch_\d+\.bin", _basename(m))),
                     key=lambda m: int(re.findall(r"\d+", _basename(m))[0]))
    if not batches or _basename(batches[0]) != "data_batch_1.bin":
        raise DataError(f"cifar10: no data_batch_1.bin in {url}")
    dirs = {PurePosixPath(m).parent for m in batches}
    if len(dirs) > 1:
        raise DataError(f"cifar10: data batches in several folders under {url}: {', '.join(map(str, dirs))}")
    test = src.find("test_batch.bin", members)
    if test is None:
        raise DataError(f"cifar10: no test_batch.bin in {url}")
    parts = [_cifar_records(src, m, 1, (10,)) for m in batches]
    x_test, y_test = _cifar_records(src, test, 1, (10,))
    names = _read_names(src, members, "batches.meta.txt", 10) or CIFAR10_CLASSES
    return Raw(name="cifar10", source=url, x_train=np.concatenate([p[0] for p in parts]),
                y_train=np.concatenate([p[1] for p in parts]), x_test=x_test, y_test=y_test, num_classes=10,
                class_names=names)


def _load_cifar100(url: str, so: dict[str, Any], options: dict[str, str]) -> Raw:
    reject_options(options, "cifar100")
    src = _Source(url, so)
    members = src.members()
    train, test = src.find("train.bin", members), src.find("test.bin", members)
    if train is None:
        raise DataError(f"cifar100: no train.bin in {url}")
    if test is None:
        raise DataError(f"cifar100: no test.bin in {url}")
    x_train, y_train = _cifar_records(src, train, 2, (20, 100))
    x_test, y_test = _cifar_records(src, test, 2, (20, 100))
    return Raw(name="cifar100", source=url, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                num_classes=100, class_names=_read_names(src, members, "fine_label_names.txt", 100))


# ---------------------------------------------------------------------------------------------------------
# MNIST IDX

_IDX_ROLES = {
    ("train", "images"): "train-images", ("train", "labels"): "train-labels",
    ("t10k", "images"): "test-images", ("test", "images"): "test-images",
    ("t10k", "labels"): "test-labels", ("test", "labels"): "test-labels",
}


def _idx_role(name: str) -> str | None:
    """'train-images', 'train-labels', 'test-images', 'test-labels' or None, from an IDX file name."""
    stem = name.lower().removesuffix(".gz")
    m = re.search(r"(?:^|[-_.])(train|t10k|test)[-_.](images|labels)[-_.]idx([13])[-_.]ubyte$", stem)
    if not m:
        return None
    role = _IDX_ROLES[(m[1], m[2])]
    if (m[2] == "images") != (m[3] == "3"):
        return None
    return role


def _parse_idx(data: bytes, where: str, ndim: int) -> np.ndarray:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{where}: bad gzip data: {exc}") from exc
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{where}: {len(data)} bytes is too short for an IDX header")
    magic = struct.unpack(">I", data[:4])[0]
    expected = 0x0800 | ndim
    if magic != expected:
        raise DataError(f"{where}: bad IDX magic number 0x{magic:08x}, expected 0x{expected:08x} "
                        f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = len(data) - 4 - 4 * ndim
    need = int(np.prod(dims, dtype=np.int64))
    if body != need:
        raise DataError(f"{where}: header says {'x'.join(map(str, dims))} = {need:,} bytes of data, "
                        f"file has {body:,}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load_mnist(url: str, so: dict[str, Any], options: dict[str, str]) -> Raw:
    reject_options(options, "mnist")
    src = _Source(url, so)
    found: dict[str, list[str]] = {}
    for m in src.members():
        role = _idx_role(_basename(m))
        if role:
            found.setdefault(role, []).append(m)
    arrays = {}
    for role in ("train-images", "train-labels", "test-images", "test-labels"):
        hits = found.get(role, [])
        if not hits:
            raise DataError(f"mnist: no {role} IDX file (e.g. {role.replace('test', 't10k')}-idx"
                            f"{3 if 'images' in role else 1}-ubyte[.gz]) in {url}")
        if len(hits) > 1:  # the same file raw and gzipped is fine: take the raw one
            stems = {h.removesuffix(".gz") for h in hits}
            if len(stems) > 1:
                raise DataError(f"mnist: several {role} IDX files in {url}: {', '.join(hits[:3])}")
            hits = sorted(hits, key=lambda h: h.endswith(".gz"))
        arrays[role] = _parse_idx(src.read(hits[0]), src.display(hits[0]), 3 if "images" in role else 1), hits[0]
    for split in ("train", "test"):
        (images, ipath), (labels, lpath) = arrays[f"{split}-images"], arrays[f"{split}-labels"]
        if len(images) != len(labels):
            raise DataError(f"mnist: {src.display(ipath)} has {len(images):,} images but "
                            f"{src.display(lpath)} has {len(labels):,} labels")
    x_train, y_train = arrays["train-images"][0], arrays["train-labels"][0].astype(np.int64)
    x_test, y_test = arrays["test-images"][0], arrays["test-labels"][0].astype(np.int64)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"mnist: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}")
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return Raw(name="mnist", source=url, x_train=x_train[:, None], y_train=y_train, x_test=x_test[:, None],
                y_test=y_test, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------------------
# Parquet (image, label) tables


def _parquet_split(path: str) -> str:
    tokens = set(re.split(r"[^a-z0-9]+", path.lower()))
    if "test" in tokens:
        return "test"
    if tokens & {"val", "valid", "validation", "dev"}:
        return "val"
    return "train"


def _load_parquet(url: str, so: dict[str, Any], options: dict[str, str]) -> Raw:
    reject_options(options, "parquet", ("image", "label", "shape"))
    image_col, label_col = options.get("image", "image"), options.get("label", "label")
    shape = _parse_shape(options["shape"]) if "shape" in options else None
    src = _Source(url, so)
    if src.is_tar:
        raise DataError(f"parquet: {url} is an archive; give the .parquet file or its folder")
    files = [m for m in src.members(maxdepth=4) if m.lower().endswith(".parquet")]
    if not files:
        raise DataError(f"parquet: no *.parquet file in {url}")
    by_split: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "val": [], "test": []}
    label_names: list[str] | None = None
    string_labels: list[np.ndarray] = []
    for path in files:
        rel = path[len(src.root):] if src.is_dir else _basename(path)
        x, y, names = _read_parquet(src, path, image_col, label_col, shape)
        if names is not None and label_names is None:
            label_names = names
        by_split[_parquet_split(rel)].append((x, y))
        if y.dtype.kind in "USO":
            string_labels.append(y)
    if not by_split["train"]:
        raise DataError(f"parquet: only test/validation files in {url}; need a training table too")
    shapes = {x.shape[1:] for parts in by_split.values() for x, _ in parts}
    if len(shapes) > 1:
        raise DataError(f"parquet: images of different shapes across files in {url}: {sorted(shapes)}")
    if string_labels:  # string class names: index them in sorted order
        if len(string_labels) != sum(len(p) for p in by_split.values()):
            raise DataError(f"parquet: column {label_col!r} mixes string and integer labels across files in {url}")
        label_names = sorted({str(v) for y in string_labels for v in y})
        index = {n: i for i, n in enumerate(label_names)}
        for parts in by_split.values():
            for k, (x, y) in enumerate(parts):
                parts[k] = (x, np.array([index[str(v)] for v in y], dtype=np.int64))

    def joined(split: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        parts = by_split[split]
        if not parts:
            return None, None
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    x_train, y_train = joined("train")
    x_val, y_val = joined("val")
    x_test, y_test = joined("test")
    top = max(int(y.max(initial=-1)) for parts in by_split.values() for _, y in parts) + 1
    num_classes = max(top, len(label_names) if label_names else 0)
    return Raw(name="parquet", source=url, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                x_val=x_val, y_val=y_val, num_classes=num_classes,
                class_names=tuple(label_names) if label_names and len(label_names) == num_classes else None)


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = re.split(r"[x,]", text.lower())
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) == 2:
        dims = (*dims, 1)
    if len(dims) != 3 or min(dims) < 1 or dims[2] not in (1, 3, 4):
        raise DataError(f"bad image shape option {text!r}: expected HxW or HxWxC with C in 1, 3, 4")
    return dims  # type: ignore[return-value]


def _read_parquet(src: _Source, path: str, image_col: str, label_col: str,
                  shape: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = src.display(path)
    try:
        with src.fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            missing = [c for c in (image_col, label_col) if c not in schema.names]
            if missing:
                role = "label" if missing[0] == label_col else "image"
                raise DataError(f"{where}: no {role} column {missing[0]!r} (columns: {', '.join(schema.names)})")
            table = pf.read(columns=[image_col, label_col])
    except DataError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: not a readable Parquet file: {exc}") from exc
    names = _hf_label_names(schema, label_col)
    labels = table.column(label_col)
    if labels.null_count:
        raise DataError(f"{where}: column {label_col!r} has {labels.null_count} null labels")
    ltype = labels.type
    if pa.types.is_dictionary(ltype):
        labels = labels.cast(ltype.value_type)
        ltype = ltype.value_type
    if pa.types.is_integer(ltype):
        y = labels.to_numpy().astype(np.int64)
        if y.size and y.min() < 0:
            raise DataError(f"{where}: column {label_col!r} has negative label {int(y.min())}")
    elif pa.types.is_string(ltype) or pa.types.is_large_string(ltype):
        y = np.asarray(labels.to_pylist(), dtype=object)
    else:
        raise DataError(f"{where}: column {label_col!r} has type {ltype}, expected integers or strings")
    x = _image_column(table.column(image_col), where, image_col, shape)
    return x, y, names


def _hf_label_names(schema: Any, label_col: str) -> list[str] | None:
    """Class names from a Hugging Face datasets export's ClassLabel feature, if any."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return None
    try:
        feature = json.loads(meta)["info"]["features"][label_col]
        names = feature.get("names")
        return [str(n) for n in names] if isinstance(names, list) and names else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _image_column(column: Any, where: str, name: str, shape: tuple[int, int, int] | None) -> np.ndarray:
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise DataError(f"{where}: column {name!r} has {arr.null_count} null images")
    t = arr.type
    if pa.types.is_struct(t):  # Hugging Face Image feature: {"bytes": binary, "path": string}
        if t.get_field_index("bytes") < 0:
            raise DataError(f"{where}: column {name!r} is a struct without a 'bytes' field ({t})")
        field = arr.field("bytes")
        if field.null_count:
            raise DataError(f"{where}: column {name!r} has {field.null_count} images with no bytes "
                            f"(only a path?); export with embedded image bytes")
        arr, t = field, field.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        if shape is not None:
            raw = [bytes(b) for b in arr.to_pylist()]
            if all(len(b) == int(np.prod(shape)) for b in raw):
                return _hwc_to_chw(np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(-1, *shape))
        return _decode_images(arr.to_pylist(), where, name)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _array_images(arr, where, name, shape)
    raise DataError(f"{where}: column {name!r} has type {t}, expected encoded image bytes, a "
                    f"{{'bytes': ...}} struct, or uint8 arrays")


def _array_images(arr: Any, where: str, name: str, shape: tuple[int, int, int] | None) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(arr)
    dims: list[int] = []
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            raise DataError(f"{where}: column {name!r} has null entries in its arrays")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if lengths.size and (lengths != lengths[0]).any():
            raise DataError(f"{where}: column {name!r} has arrays of different lengths "
                            f"({int(lengths.min())} to {int(lengths.max())})")
        dims.append(int(lengths[0]) if lengths.size else 0)
        arr = arr.flatten()
    if not pa.types.is_integer(arr.type):
        raise DataError(f"{where}: column {name!r} holds {arr.type} values, expected uint8 pixels")
    values = arr.to_numpy(zero_copy_only=False)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(f"{where}: column {name!r} has pixel values {int(values.min())}..{int(values.max())}, "
                        f"expected 0..255")
    values = values.astype(np.uint8)
    if shape is not None:
        if int(np.prod(dims)) != int(np.prod(shape)):
            raise DataError(f"{where}: column {name!r} arrays hold {int(np.prod(dims))} values, "
                            f"shape option {'x'.join(map(str, shape))} needs {int(np.prod(shape))}")
        return _hwc_to_chw(values.reshape(n, *shape))
    if len(dims) == 1:  # flat: only a square grey image can be read without a shape option
        side = math.isqrt(dims[0])
        if side * side != dims[0]:
            raise DataError(f"{where}: column {name!r} holds flat arrays of {dims[0]} values; give "
                            f"shape=HxWxC in the spec, e.g. parquet[shape=32x32x3]:URL")
        return values.reshape(n, 1, side, side)
    if len(dims) == 2:
        return values.reshape(n, 1, *dims)
    if len(dims) == 3:
        x = values.reshape(n, *dims)
        if dims[2] in (1, 3, 4):
            return _hwc_to_chw(x)
        if dims[0] in (1, 3, 4):
            return x
    raise DataError(f"{where}: column {name!r} holds arrays of shape {tuple(dims)}, expected HxW, HxWxC or CxHxW")


def _hwc_to_chw(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] == 4:
        x = x[..., :3]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _decode_images(blobs: list[Any], where: str, name: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError(f"{where}: decoding column {name!r} (PNG/JPEG) needs Pillow: pip install pillow") from exc

    def open_row(i: int) -> Any:
        try:
            return Image.open(io.BytesIO(blobs[i]))  # lazy: reads the header only
        except Exception as exc:  # Pillow raises many types for bad data
            raise DataError(f"{where}: row {i} of column {name!r} is not a readable image: {exc}") from exc

    grey_modes = ("1", "L", "LA", "I", "I;16", "F")
    grey, size = True, None
    for i in range(len(blobs)):  # first pass, headers only: one size, and grey or colour
        im = open_row(i)
        size = size or im.size
        if im.size != size:
            raise DataError(f"{where}: row {i} of column {name!r} is {im.size[0]}x{im.size[1]}, "
                            f"row 0 is {size[0]}x{size[1]}")
        if grey and im.mode not in grey_modes and not (im.mode == "P" and _palette_is_grey(im)):
            grey = False
    width, height = size or (0, 0)
    out = np.empty((len(blobs), 1 if grey else 3, height, width), dtype=np.uint8)
    for i in range(len(blobs)):  # second pass: decode one at a time straight into the array
        im = open_row(i)
        try:
            if im.mode in ("I", "I;16", "F"):
                a = np.asarray(im, dtype=np.float64)
                a = np.clip(a / (256.0 if a.max(initial=0) > 255 else 1.0), 0, 255).astype(np.uint8)
            else:
                a = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8)
        except Exception as exc:  # truncated data surfaces only when decoding
            raise DataError(f"{where}: row {i} of column {name!r} is not a readable image: {exc}") from exc
        out[i] = a[None] if grey else a.transpose(2, 0, 1)
    return out


def _palette_is_grey(im: Any) -> bool:
    palette = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    return bool((palette[:, 0] == palette[:, 1]).all() and (palette[:, 1] == palette[:, 2]).all())


FORMAT_LOADERS: dict[str, Callable[[str, dict[str, Any], dict[str, str]], Raw]] = {
    "cifar10": _load_cifar10, "cifar100": _load_cifar100, "mnist": _load_mnist, "parquet": _load_parquet,
}
