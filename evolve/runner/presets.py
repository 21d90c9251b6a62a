"""Paper presets: ``evolve run --preset NAME`` sets what a paper set, as plain data.

A preset is a dict of :class:`evolve.config.RunConfig` fields (``train`` nested for
:class:`evolve.config.TrainConfig`). It sits between the defaults and what the user gives:

    defaults < preset < config file < command-line options

``train`` and ``genome_options`` merge key by key (a config file's ``[train] batch_size``
keeps the preset's schedule); ``genome_options`` are dropped when a later layer changes the
genome kind. A config file may name its preset itself: ``preset = "gcnn-mnist"``.

Budgets that a paper gives in epochs are kept in epochs (``Preset.epochs``): when the config
is built, ``train.batches`` becomes ``ceil(epochs * training images / batch_size)`` for the
dataset actually used, its validation share (``val_fraction``) carved off, unless a config
file sets ``train.batches`` itself. The training split's size is known without reading the
data for the embedded datasets and the published CIFAR-10/100 (50,000 training images) and
MNIST (60,000) files; any other dataset (Parquet, a URL of unknown format) is loaded and counted.

A preset whose data cannot ship with the package (CIFAR) names the format with no URL
(``cifar10:``); the run refuses to start until ``--dataset cifar10:PATH`` says where the data is
(``--dry-run`` shows the dataset as required).

Each preset's docstring cites the paper's setting and marks what is our reading or assumption.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from evolve.config import ConfigError, RunConfig, build_config, merge_settings
from evolve.training.datasets import EMBEDDED_TEST_FRACTION, run_dataset
from genomes.gcnn.genome import PAPER_CHANNELS

# the training pool (before validation is carved off) of the datasets whose size is fixed
_EMBEDDED_IMAGES = {"mnist-mini": 5_000, "digits": 1_797}  # a fixed 20 % test split is carved first
_PUBLISHED_TRAIN = {"cifar10": 50_000, "cifar100": 50_000, "mnist": 60_000}  # the published training files

NO_CAP = 1_000_000_000  # a parameter bound that never binds at the papers' sizes


@dataclass(frozen=True)
class Preset:
    """A named set of RunConfig fields, the paper's figure it aims at, and how its budget is counted."""

    name: str
    doc: str
    settings: dict[str, Any]
    epochs: float | None = None  # per child: train.batches is computed from the training split used
    figure: str = ""  # the paper's result this preset reproduces
    dataset_hint: str | None = None  # "cifar10:PATH" where the data must be given


PRESETS: dict[str, Preset] = {}


Settings = Callable[[], dict[str, Any]]


def _preset(name: str, *, epochs: float | None = None, figure: str = "",
            dataset_hint: str | None = None) -> Callable[[Settings], Settings]:
    def register(fn: Settings) -> Settings:
        PRESETS[name] = Preset(name=name, doc=inspect.getdoc(fn) or "", settings=fn(), epochs=epochs,
                               figure=figure, dataset_hint=dataset_hint)
        return fn

    return register


# ----------------------------------------------------------------------------- the presets


@_preset("demo")
def demo() -> dict[str, Any]:
    """The plain defaults, unchanged: a small DNA run on the embedded MNIST subset (no paper)."""
    return {}


def _lse(dataset: str) -> dict[str, Any]:
    return {
        "store": f"runs/lse-{dataset}",
        "genome": "dna",
        "genome_options": {},
        "selection": "tournament",
        "population": 1_000,
        "workers": 250,
        "steps": 40_000,
        "dataset": f"{dataset}:",
        "val_fraction": 0.1,
        "max_params": NO_CAP,
        "max_flops": 0,
        "fitness": "train",
        "final_batches": 0,
        "train": {
            "batches": 25_600,
            "batch_size": 50,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 1e-4,
            "learning_rate": 0.1,
            "schedule": "constant",
            "warmup": 0.0,
            "stages": [],
            "augment": "crop-flip",
            "shift": 4,
            "evaluate_test": False,
            "inherit_weights": True,
        },
    }


@_preset("lse-cifar10", figure="94.6% test accuracy (CIFAR-10)", dataset_hint="cifar10:PATH")
def lse_cifar10() -> dict[str, Any]:
    """Real et al. 2017, "Large-Scale Evolution of Image Classifiers", CIFAR-10 (paper: 94.6% test).

    The paper's settings:
      - DNA genome from the trivial individual (no convolutions), every mutation equally likely,
        the learning rate carried in the DNA and starting at 0.1: ``genome_options`` left empty,
        which is exactly that (``genomes.dna.genome.DnaOptions`` defaults: initial_convs 0, morphisms
        off, initial_lr 0.1, uniform mutation weights);
      - tournament selection on random pairs, population 1,000, 250 workers;
      - each child trained 25,600 SGD steps, batch 50, momentum 0.9, weight decay 1e-4, at its
        DNA's learning rate throughout (``schedule = "constant"``; ``train.learning_rate`` is
        unused by DNA genomes), inheriting its parent's weights where shapes allow;
      - 45,000 training / 5,000 validation images (``val_fraction = 0.1``); fitness is
        validation accuracy, test accuracy only reported.

    Our reading or assumption:
      - augmentation "as in He et al. 2016" read as pad 4, random 32x32 crop, random
        left-right flip (``augment = "crop-flip"``, ``shift = 4``); weight decay 1e-4 and the
        augmentation are as we recall the paper's text, not confirmed by a second source here;
      - ``steps = 40,000``: the paper stopped on wall-clock (about 250 hours) and gives no
        child count; 40,000 children is our estimate of that budget (raise it with --steps or
        ``evolve resume --steps``);
      - ``max_params`` is set to 1e9 (and ``max_flops`` to 0) so that neither binds: the paper had no parameter cap and
        its best CIFAR-10 net had 5.4M parameters (the engine's default bound, 1M, would have
        truncated it);
      - the data: CIFAR-10 cannot ship with the package: give ``--dataset cifar10:PATH`` (the
        binary version, a folder or the .tar.gz, local or any fsspec URL).
    """
    return _lse("cifar10")


@_preset("lse-cifar100", figure="77.0% test accuracy (CIFAR-100)", dataset_hint="cifar100:PATH")
def lse_cifar100() -> dict[str, Any]:
    """Real et al. 2017, CIFAR-100 (paper: 77.0% test): the CIFAR-10 experiment on CIFAR-100.

    Every setting as ``lse-cifar10`` (the paper ran CIFAR-100 with the same algorithm and
    training); only the data differ: ``--dataset cifar100:PATH`` (the binary version, fine
    labels) is required. ``max_params`` is 1e9 (``max_flops`` 0) so that neither binds: the paper's best
    CIFAR-100 net was, as we read its Table 1, about 40M parameters. The same readings and
    assumptions as ``lse-cifar10`` apply (augmentation, weight decay, ``steps``).
    """
    return _lse("cifar100")


def _gcnn(nodes: list[int], q_m: float, q_c: float, dataset: str, learning_rate: float,
          stages: list[list[float]]) -> dict[str, Any]:
    return {
        "store": f"runs/gcnn-{dataset.split(':')[0].split('-')[0]}",
        "genome": "gcnn",
        "genome_options": {"nodes": nodes, "channels": list(PAPER_CHANNELS[len(nodes)]),
                           "q_m": q_m, "q_c": q_c},
        "selection": "generational",
        "p_m": 0.8,
        "p_c": 0.2,
        "population": 20,
        "steps": 20 * 50,
        "dataset": dataset,
        "max_params": NO_CAP,
        "max_flops": 0,
        "fitness": "train",
        "final_batches": 0,
        "train": {
            "batch_size": 32,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 5e-4,
            "learning_rate": learning_rate,
            "schedule": "staged",
            "warmup": 0.0,
            "stages": stages,
            "augment": "none",
            "evaluate_test": False,
            "inherit_weights": False,
        },
    }


@_preset("gcnn-mnist", epochs=25, figure="99.66% (MNIST, best individual of the search)")
def gcnn_mnist() -> dict[str, Any]:
    """Xie & Yuille 2017, "Genetic CNN", MNIST (paper: 99.66%).

    The paper's settings:
      - N = 20 individuals, T = 50 generations (``steps = 20 * 50``: the paper explored
        20 * (50 + 1) = 1,020 individuals, the initial generation included), generational
        selection by roulette; pM = 0.8, qM = 0.1, pC = 0.2, qC = 0.3;
      - S = 2 stages of K = (3, 5) nodes with 20 and 50 filters
        (``genomes.gcnn.genome.PAPER_CHANNELS``), each bit of the initial codes Bernoulli(0.5);
      - every child trained from scratch (``inherit_weights = false``): 20 epochs at learning
        rate 1e-3, then 4 at 1e-4, then 1 at 1e-5, i.e. 25 epochs with a ``staged`` schedule
        [[0, 1], [0.8, 0.1], [0.96, 0.01]] (20/25 and 24/25 of the batches);
      - a genome seen before is re-evaluated and its fitness averaged (the engine always does).

    Budget: 25 epochs; ``train.batches`` is computed when the config is built from the size
    of the training split actually used (``ceil(25 * training images / batch_size)``), so it is
    right for the default embedded ``mnist-mini`` and for the full set alike.

    Our reading or assumption:
      - data: ``mnist-mini`` (the embedded 5,000-image subset) so the preset runs anywhere; the
        paper used the full MNIST: ``--dataset mnist:PATH`` (IDX files), batches recomputed;
      - optimiser and batch size are not given in the paper: SGD with momentum 0.9, weight
        decay 5e-4, batch 32 (the batch of the gentun replica of the paper); no augmentation;
        the validation share is the run's ``val_fraction``;
      - ``max_params`` 1e9, ``max_flops`` 0: the paper has no bound (these nets are far below any);
      - known differences of the genome itself, not settings: every node is a 3x3 convolution
        with batch norm (the paper's MNIST net was LeNet-like, 5x5), and the classifier is global
        average pooling, dropout 0.5 and one linear layer.
    """
    return _gcnn([3, 5], 0.1, 0.3, "mnist-mini", 1e-3, [[0.0, 1.0], [0.8, 0.1], [0.96, 0.01]])


@_preset("gcnn-cifar10", epochs=240, figure="92.9% (CIFAR-10)", dataset_hint="cifar10:PATH")
def gcnn_cifar10() -> dict[str, Any]:
    """Xie & Yuille 2017, "Genetic CNN", CIFAR-10 (paper: 92.9%).

    The paper's settings:
      - N = 20, T = 50 generations (``steps = 20 * 50``), roulette selection; pM = 0.8,
        qM = 0.05, pC = 0.2, qC = 0.2;
      - S = 3 stages of K = (3, 4, 5) nodes with 8, 16 and 32 filters; children trained from
        scratch (``inherit_weights = false``).

    Budget: ``train.batches`` is computed from 240 epochs over the training split actually used.

    Our reading or assumption:
      - the schedule, 120 epochs at 1e-2, 60 at 1e-3, 40 at 1e-4 and 20 at 1e-5 (``staged``
        [[0, 1], [0.5, 0.1], [0.75, 0.01], [11/12, 0.001]]), is the reading of the gentun replica
        (gmontamat/gentun, examples/geneticcnn_cifar10.py, which cites the paper's section 4.2);
        we could not confirm it against the paper's text here;
      - batch 32, SGD momentum 0.9, weight decay 5e-4, no augmentation: not given in the paper;
      - 92.9% is the paper's CIFAR-10 figure for its evolved structure; as we read the paper it
        comes from training that structure outside the search, so a run of this preset reproduces
        the search that found it, and the figure needs that final training too;
      - ``max_params`` 1e9, ``max_flops`` 0 (no bound in the paper); the data: ``--dataset cifar10:PATH`` is
        required; the genome's differences listed under ``gcnn-mnist`` apply.
    """
    return _gcnn([3, 4, 5], 0.05, 0.2, "cifar10:", 1e-2,
                 [[0.0, 1.0], [0.5, 0.1], [0.75, 0.01], [11 / 12, 0.001]])


@_preset("nb201-cifar10", figure="the table's optimum, 94.37% CIFAR-10 test (NAS-Bench-201, noise-free)")
def nb201_cifar10() -> dict[str, Any]:
    """NAS-Bench-201 (Dong & Yang 2020) on CIFAR-10, searched on its table: lookups, no training.

    Every one of the 15,625 cells has been trained (200 epochs, CIFAR-10); the shipped table
    (``evolve/training/tables``) holds each cell's mean test accuracy, so a run costs seconds.

    The settings ``bench/nasbench.py`` chose, on this table only:
      - regularized evolution (``selection = "aging"``) with population 30 and sample 10, the best
        at 150 evaluations of those the bench tried (population 20-40, sample 5-10); the
        benchmark's own runs used population 10 and sample 3, which the bench also measures;
      - 150 evaluations (``steps = 120`` after the initial 30), 4 workers, ``refresh_seconds = 0``
        (each selection sees every finished child: a lookup is instant, unlike training).

    Protocol: the table holds the 200-epoch *test* accuracy, the benchmark's noise-free setting;
    the published searches select on 12-epoch validation accuracy under a simulated time budget,
    so their figures are not comparable with a run of this preset. The budget is counted in
    evaluations. ``max_params`` admits every cell.
    """
    return {
        "store": "runs/nb201-cifar10",
        "genome": "nb201",
        "genome_options": {},
        "fitness": "table:nb201-cifar10",
        "selection": "aging",
        "population": 30,
        "sample_size": 10,
        "steps": 120,
        "workers": 4,
        "refresh_seconds": 0.0,
        "max_params": 2_000_000,
        "max_flops": 0,
        "final_batches": 0,
    }


# ----------------------------------------------------------------------------- resolution


def lookup(name: str, source: str = "--preset") -> Preset:
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"{source}: unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def train_images(config: RunConfig) -> int:
    """How many images the training split of the config's dataset holds once validation is carved off."""
    spec, val_fraction = config.dataset.strip(), config.val_fraction
    fmt = spec.split(":", 1)[0].split("[", 1)[0] if ":" in spec else None
    if spec in _EMBEDDED_IMAGES:
        n = _EMBEDDED_IMAGES[spec]
        pool = n - _carved(EMBEDDED_TEST_FRACTION, n)
    elif fmt in _PUBLISHED_TRAIN:
        pool = _PUBLISHED_TRAIN[fmt]
    else:  # a size nobody can know without reading the data
        return run_dataset(config).sizes()["train"]
    return pool - _carved(val_fraction, pool)


def _carved(fraction: float, n: int) -> int:
    """Examples a split of ``fraction`` carves from ``n`` (``evolve.training.datasets``: round half up, at least 1)."""
    if fraction <= 0:
        return 0
    return min(max(math.floor(fraction * n + 0.5), 1), n - 1) if n >= 2 else math.floor(fraction * n + 0.5)


def resolve(name: str | None, file_data: dict[str, Any], options: dict[str, Any],
            source: str = "--preset", config_source: str = "options") -> dict[str, Any]:
    """The settings of a run, ready for ``build_config``: defaults < preset < config file < options.

    ``source`` names where the preset's name came from, ``config_source`` the settings (both for
    error messages). A preset's epoch budget becomes ``train.batches`` for the dataset these
    settings train on, unless the config file or the options state ``train.batches``.
    """
    preset = None if name is None else lookup(name, source)
    data = merge_settings(merge_settings(copy.deepcopy(preset.settings) if preset else {}, file_data), options)
    stated = [layer.get("train") for layer in (file_data, options)]
    if preset and preset.epochs and not any(isinstance(t, dict) and "batches" in t for t in stated):
        config = build_config(data, config_source)  # every value checked before one is used
        images = train_images(config)
        batches = math.ceil(preset.epochs * images / config.train.batch_size)
        data.setdefault("train", {})["batches"] = max(1, batches)
    return data


_NO_URL = re.compile(r"^(?P<fmt>[a-z0-9]+)(?:\[[^\]]*\])?:\s*$")


def required_dataset(name: str | None, dataset: str) -> str | None:
    """What ``--dataset`` must still say ("cifar10:PATH") when the dataset names a format but no URL."""
    m = _NO_URL.match(dataset.strip())
    if m is None:
        return None
    preset = PRESETS.get(name) if name else None
    return preset.dataset_hint if preset and preset.dataset_hint else f"{m['fmt']}:PATH"


def missing_dataset(name: str | None, dataset: str) -> str | None:
    """The one-line complaint when the dataset still has no URL (a CIFAR preset's default), or None."""
    hint = required_dataset(name, dataset)
    if hint is None:
        return None
    preset = PRESETS.get(name) if name else None
    who = f"preset {name} needs" if preset and preset.dataset_hint else f"{dataset.strip()!r} names"
    return (f"dataset: {who} data that does not ship with evolve: give --dataset {hint} "
            f"(a path or an fsspec URL of the published files)")


__all__ = ["PRESETS", "Preset", "lookup", "missing_dataset", "required_dataset", "resolve", "train_images"]
