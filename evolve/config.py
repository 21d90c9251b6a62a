"""A run's configuration: validated once, stored in run.json, refused if a resume conflicts."""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from genomes import OWN as OWN_GENOME
from genomes import GenomeError, SearchSpace, genome_class
from genomes.dna.mutations import dna_options
from genomes.fixed.genome import parse_options as fixed_options
from genomes.gcnn.genome import parse_options
from genomes.hparams import ACTIVATIONS, INITS, ChoiceGene, FloatGene, Gene, hparams_json, parse_hparams
from genomes.nb201.genome import parse_options as nb201_options


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field."""


class TrainConfig(BaseModel):
    """How each child is trained (Real et al. 2017: SGD, momentum 0.9, weight decay 1e-4, batch 50).

    ``schedule`` shapes the learning rate over a child's ``batches``, starting from the genome's
    rate (or ``learning_rate``), after a linear ``warmup`` where set: ``constant``; ``cosine`` (down
    to 0; one child is one cycle of SGDR, so a lineage trained from inherited weights is
    warm-restarted SGD);
    ``one-cycle`` (a cosine rise over ``warmup`` then a cosine fall); ``staged`` (multiplied by each
    ``[start fraction, factor]`` of ``stages`` from its start, Genetic CNN's 1e-3/1e-4/1e-5).
    ``augment``: ``shift`` moves each image by up to ``shift`` pixels (MNIST); ``crop-flip`` pads
    by ``shift``, crops back and flips left-right at random (CIFAR, as Real et al.).
    """

    model_config = ConfigDict(extra="forbid")

    batches: int = Field(150, ge=1, description="SGD steps per child (25,600 in the paper)")
    batch_size: int = Field(50, ge=1)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0.0)
    learning_rate: float = Field(0.1, gt=0.0, description="used by genomes that carry no learning rate")
    schedule: Literal["constant", "cosine", "one-cycle", "staged"] = "cosine"
    warmup: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of batches warming up (a linear rise; "
                          "one-cycle: its cosine rise)")
    stages: list[tuple[float, float]] = Field(default_factory=list,
                                               description="staged: [start fraction, lr factor] pairs")
    augment: Literal["none", "shift", "affine", "crop-flip"] = "shift"
    shift: int = Field(2, ge=0, description="pixels of shift (shift) or padding (crop-flip)")
    evaluate_test: bool = Field(False, description="also measure every child's test accuracy (costs time, "
                                                   "never selects); the run's best is tested at the end anyway")
    eval_batch_size: int = Field(1000, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    inherit_weights: bool = Field(True, description="start each child from its parent's trained weights "
                                  "where shapes allow; a run that does not set it resolves it per genome: "
                                  "dna true, gcnn false (Genetic CNN trains every child from scratch)")

    @model_validator(mode="after")
    def _check_stages(self) -> TrainConfig:
        if self.schedule == "staged":
            starts = [start for start, _ in self.stages]
            if not self.stages or starts[0] != 0.0 or starts != sorted(starts) or starts[-1] >= 1.0:
                raise ValueError(f"stages: 'staged' needs [start fraction, factor] pairs with starts rising "
                                 f"from 0 and below 1, got {self.stages!r}")
            if any(factor <= 0 for _, factor in self.stages):
                raise ValueError(f"stages: every factor must be > 0, got {self.stages!r}")
        return self


# ----- the genes the built-in trainer reads (evolve.training.genes applies them) ------------------

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
AUGMENTS = ("none", "shift", "affine", "crop-flip")


@dataclass(frozen=True)
class Known:
    """A gene the built-in trainer reads: its type and a test of its values."""

    kind: str  # "float", "int" or "choice"
    ok: Callable[[Any], bool]
    says: str


def _number(test: Callable[[float], bool]) -> Callable[[Any], bool]:
    return lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and test(v)


def _integer(test: Callable[[int], bool]) -> Callable[[Any], bool]:
    return lambda v: not isinstance(v, bool) and isinstance(v, int) and test(v)


TRAINER_GENES: dict[str, Known] = {
    "optimizer": Known("choice", lambda v: v in OPTIMIZERS, f"one of {list(OPTIMIZERS)}"),
    "learning_rate": Known("float", _number(lambda v: v > 0), "a float > 0"),
    "momentum": Known("float", _number(lambda v: 0 <= v < 1), "a float in [0, 1)"),
    "weight_decay": Known("float", _number(lambda v: v >= 0), "a float >= 0"),
    "batch_size": Known("int", _integer(lambda v: v >= 1), "an int >= 1"),
    "label_smoothing": Known("float", _number(lambda v: 0 <= v < 1), "a float in [0, 1)"),
    "dropout": Known("float", _number(lambda v: 0 <= v < 1), "a float in [0, 1): dropout before the classifier"),
    "activation": Known("choice", lambda v: v in ACTIVATIONS, f"one of {list(ACTIVATIONS)}"),
    "init": Known("choice", lambda v: v in INITS, f"one of {list(INITS)}"),
    "batches": Known("int", _integer(lambda v: v >= 1), "an int >= 1: SGD steps for the child"),
    "augment": Known("choice", lambda v: v in AUGMENTS, f"one of {list(AUGMENTS)}"),
    "shift": Known("int", _integer(lambda v: v >= 0), "an int >= 0: the augmentation's strength in pixels"),
}
"""Every gene the built-in trainer reads: its type and the values it admits."""


def check_trainer_genes(genes: Mapping[str, Gene], path: str = "hparams") -> None:
    """ValueError naming the gene where the built-in trainer does not read it, or a value it could draw
    is one the trainer cannot use."""
    for name, gene in genes.items():
        known = TRAINER_GENES.get(name)
        if known is None:
            raise ValueError(f"{path}.{name}: the built-in trainer reads no gene of that name (it reads "
                             f"{', '.join(TRAINER_GENES)}); a fitness of your own receives any gene")
        values = _extremes(gene)
        if known.kind == "choice" and not isinstance(gene, ChoiceGene):
            raise ValueError(f"{path}.{name}: expected a choice of {known.says.removeprefix('one of ')}")
        bad = [v for v in values if not known.ok(v)]
        if bad or (known.kind == "int" and isinstance(gene, FloatGene)):
            raise ValueError(f"{path}.{name}: every value must be {known.says}, got {gene.describe()!r}")


def _extremes(gene: Gene) -> list[Any]:
    """The values that decide whether every value the gene can take is admissible (ranges are convex)."""
    return list(gene.options) if isinstance(gene, ChoiceGene) else [gene.low, gene.high]


BUILT_IN_GENOMES = ("dna", "gcnn", "nb201", "fixed")

DEFAULT_GENOME_OPTIONS: dict[str, dict[str, Any]] = {
    "dna": {"morphisms": True, "initial_convs": 3, "initial_channels": 8},
    "gcnn": {},
    "nb201": {},
    "fixed": {"network": "lenet5"},
}
"""A run that names no genome_options: DNA grows a small conv stem by function-preserving mutations
(the laptop-budget default); Genetic CNN and NAS-Bench-201 keep their papers'. The presets set their own."""

DEFAULT_MAX_PARAMS: dict[str, int] = {"nb201": 2_000_000}
"""A run that names no max_params, where the kind's space needs more than the field's default: every
NAS-Bench-201 cell fits (the largest, six 3x3 convolutions, has 1,531,546 parameters on CIFAR-10)."""

DEFAULT_MAX_FLOPS: dict[str, int] = {"dna": 3_000_000, "gcnn": 0, "nb201": 0, "fixed": 0}
"""A run that names no max_flops: a grown DNA stays below four LeNet-5s (0.83 MFLOPs on 28x28), which
keeps the default run's children cheap on a laptop core (its lineages grow to the bound: at 5 MFLOPs
two of three seeds took 9.6 and 10.3 minutes on 2 cores); Genetic CNN's spaces are fixed and bounded."""

LEGACY_TRAIN = {"nesterov": False, "weight_decay": 1e-4, "schedule": "constant", "augment": "none",
                "evaluate_test": True}
LEGACY_RUN = {"val_fraction": 0.1, "final_batches": 0, "final_from": "weights", "final_data": "train",
              "max_flops": 0, "keep": "all"}
"""TrainConfig and RunConfig fields as a run.json written before they existed implies (``load_run``)."""


class RunConfig(BaseModel):
    """Everything that defines a run. Fields marked `resumable` may differ on resume."""

    model_config = ConfigDict(extra="forbid")

    store: str = "runs/demo"
    storage_options: dict[str, Any] = Field(default_factory=dict)
    genome: str = Field("dna", description="what evolves: dna (Real et al.'s graphs), gcnn (Genetic CNN), nb201 "
                        "(NAS-Bench-201 cells), fixed (one network, named in genome_options.network; only hparams "
                        "evolve), or a genome class of your own, 'package.module:Class' (genomes.base.Genome)")
    genome_options: dict[str, Any] = Field(default_factory=dict, description="the genome kind's options; "
                                           "when absent, DEFAULT_GENOME_OPTIONS for the kind")
    hparams: dict[str, Any] = Field(default_factory=dict, description="hyperparameter genes every individual "
                                    "carries, name = spec (genomes.hparams): {float = [LOW, HIGH], log = true}, "
                                    "{int = [LOW, HIGH], step = S}, {choice = [...]} or a line 'log:LOW..HIGH'; "
                                    "the built-in trainer reads those of evolve.training.genes")
    selection: Literal["tournament", "aging", "random", "generational"] = Field(
        "tournament", description="tournament or aging (steady state), random (every child a uniform draw from "
        "the space: the baseline; gcnn and nb201), generational (Genetic CNN's, gcnn only)")
    sample_size: int = Field(5, ge=2, description="aging evolution's sample size S")
    p_m: float = Field(0.8, ge=0.0, le=1.0, description="generational: mutation probability per individual")
    p_c: float = Field(0.2, ge=0.0, le=1.0, description="generational: crossover probability per pair")
    population: int = Field(12, ge=2)
    steps: int = Field(280, ge=0, description="children to produce after the initial population")
    seed: int = 0
    dataset: str = "mnist-mini"
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of the training pool held out for "
                                "validation (the fitness), where the data publishes no validation split")
    max_params: int = Field(100_000, ge=1)
    max_flops: int = Field(0, ge=0, description="forward FLOPs per image a network may take "
                           "(children over it are redrawn; it bounds each child's training time); 0: no bound")
    fitness: str = Field("train", description="'train' (the built-in image trainer on the dataset), "
                         "'synthetic' (engine tests), a tabular benchmark: 'table:PATH[#COLUMN]' "
                         "(evolve.training.tabular; nb201), or your own: 'module.path:function' "
                         "(evolve.training.fitness)")
    input_shape: tuple[int, int, int] | None = Field(None, description="C, H, W of the networks' input: "
                                                     "from the dataset when training on one; required by your "
                                                     "own fitness")
    num_classes: int | None = Field(None, ge=1, description="the networks' outputs (classes, or 1 for one "
                                    "regression target): from the dataset when training on one; required by "
                                    "your own fitness")
    synthetic_seconds: float = Field(0.0, ge=0.0, description="synthetic fitness: seconds each evaluation takes")
    train: TrainConfig = Field(default_factory=TrainConfig)
    final_batches: int = Field(4000, ge=0, description="after the search, the best's final training: this "
                               "many batches (see final_from, final_data); 0: none (the paper presets)")
    final_from: Literal["scratch", "weights"] = Field("scratch", description="the final model is the best "
                                                      "architecture trained from a fresh initialisation with "
                                                      "LeNet-5's recipe (one-cycle SGD at 0.1, evolve.training.lenet), "
                                                      "or the best trained on from its weights (a cosine cycle "
                                                      "peaking at train.learning_rate)")
    final_data: Literal["train", "train+val"] = Field("train+val", description="what the final training "
                                                      "reads: the training split, or the training and validation "
                                                      "splits together once validation has chosen the architecture "
                                                      "(the final model's validation accuracy is then not measured)")
    reference: bool = Field(True, description="after the search, LeNet-5 trained with a practitioner's recipe on "
                            "the same split, for reference (a minute or so of one core on the demo's data); false: "
                            "skipped")
    workers: int = Field(2, ge=1)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    address: str | None = None
    lease_seconds: float = Field(60.0, gt=0.0, description="a claim whose heartbeat is older is adopted")
    refresh_seconds: float = Field(1.0, ge=0.0, description="how stale a worker's view of the population may be")
    keep: Literal["needed", "all"] = Field("needed", description="weights kept during the run: 'needed' (the "
                                           "workers delete dead individuals' weights as they go, keeping the "
                                           "best keep_best and pinned ones) or 'all' (every weight, for replays)")
    keep_best: int = Field(5, ge=1, description="with keep = 'needed': the weights of the best keep_best "
                           "individuals ever (dead or alive) are never deleted")

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.selection == "generational" and self.genome != "gcnn":
            raise ValueError("selection 'generational' is Genetic CNN's algorithm: set genome = 'gcnn'")
        if self.selection == "generational" and self.steps % self.population:
            raise ValueError(f"steps ({self.steps}) must be a multiple of population ({self.population}) "
                             "for generational selection (whole generations)")
        if self.genome not in BUILT_IN_GENOMES and not OWN_GENOME.fullmatch(self.genome):
            raise ValueError(f"genome: expected one of {list(BUILT_IN_GENOMES)} or 'package.module:Class' (a genome "
                             f"class of your own), got {self.genome!r}")
        try:
            cls = genome_class(self.genome)
        except GenomeError as exc:
            raise ValueError(f"genome: {exc}") from None
        if self.selection == "random" and self.genome == "dna":
            raise ValueError("selection 'random' draws each child uniformly from the space, and DNA's space "
                             "is unbounded: use genome = 'gcnn' or 'nb201'")
        if self.selection == "random" and not callable(getattr(cls, "sample", None)):
            raise ValueError(f"selection 'random' draws each child uniformly from the space: genome {self.genome!r} "
                             "has no sample(rng, space) to draw with")
        if self.hparams and self.genome not in BUILT_IN_GENOMES and not callable(getattr(cls, "genes", None)):
            raise ValueError(f"hparams: genome {self.genome!r} carries no genes (it has no genes() method)")
        if self.selection == "aging" and self.sample_size > self.population:
            raise ValueError(f"sample_size ({self.sample_size}) exceeds population ({self.population})")
        _check_genome_options(self.genome, self.genome_options)
        self.hparams = _check_hparams(self.hparams, self.fitness, self.genome)
        if is_table(self.fitness):
            _check_table(self.fitness, self.genome)
        elif self.fitness not in ("train", "synthetic") and not FITNESS_NAME.fullmatch(self.fitness):
            raise ValueError(f"fitness: expected 'train', 'synthetic', 'table:PATH' or 'module.path:function', "
                             f"got {self.fitness!r}")
        if self.fitness == "train" and (self.input_shape is not None or self.num_classes is not None):
            raise ValueError("input_shape, num_classes: a run that trains on a dataset takes them from the data; "
                             "give them only with your own fitness (or 'synthetic')")
        if FITNESS_NAME.fullmatch(self.fitness) and (self.input_shape is None or self.num_classes is None):
            raise ValueError(f"input_shape, num_classes: fitness {self.fitness!r} needs the networks' input shape "
                             "(C, H, W) and their number of outputs")
        if self.input_shape is not None and min(self.input_shape) < 1:
            raise ValueError(f"input_shape: every dimension must be >= 1, got {self.input_shape!r}")
        if "inherit_weights" not in self.train.model_fields_set:  # not given: the genome's own practice
            self.train = self.train.model_copy(update={"inherit_weights": self.genome in ("dna", "fixed")})
        return self

    @model_validator(mode="before")
    @classmethod
    def _genome_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("genome", "dna")
            if "genome_options" not in data:
                data = {**data, "genome_options": dict(DEFAULT_GENOME_OPTIONS.get(kind, {}))}
            if "max_flops" not in data:
                data = {**data, "max_flops": DEFAULT_MAX_FLOPS.get(kind, 0)}
            if "max_params" not in data and kind in DEFAULT_MAX_PARAMS:
                data = {**data, "max_params": DEFAULT_MAX_PARAMS[kind]}
        return data

    def identity(self) -> dict[str, Any]:
        """The fields that define the run's results; a resume must not change them."""
        return self.model_dump(exclude=RESUMABLE_FIELDS)


FITNESS_NAME = re.compile(r"(?:[A-Za-z_][\w.]*|in-process):[A-Za-z_][\w.]*")
"""Your own fitness by name: ``package.module:function`` (``function`` may be ``Class.method``), or
``in-process:NAME`` for a function given to ``evolve.run`` that no worker could import by name."""

TABLE_PREFIX = "table:"
TABLE_FORM = "table:PATH[#METRIC[,COST[*SCALE]]]"
TABLE_SPEC = re.compile(r"table:(?P<path>[^#]+)(?:#(?P<metric>[^,]*)(?:,(?P<cost>[^*]+)(?:\*(?P<scale>.+))?)?)?")


@dataclass(frozen=True)
class TableSpec:
    """What a tabular benchmark's fitness names (``evolve.training.tabular`` reads the table)."""

    path: str
    metric: str | None = None
    cost: str | None = None
    scale: float = 1.0


def is_table(fitness: str) -> bool:
    return fitness.startswith(TABLE_PREFIX)


def parse_table_spec(fitness: str) -> TableSpec:
    """``table:PATH[#METRIC[,COST[*SCALE]]]`` as a TableSpec; ConfigError names what is wrong."""
    match = TABLE_SPEC.fullmatch(fitness.strip())
    if match is None:
        raise ConfigError(f"fitness: expected '{TABLE_FORM}', got {fitness!r}")
    scale = 1.0
    if match["scale"] is not None:
        try:
            scale = float(match["scale"])
        except ValueError:
            scale = -1.0
        if not math.isfinite(scale) or scale < 0:
            raise ConfigError(f"fitness: the cost scale SCALE of '{TABLE_FORM}' must be a number >= 0, got "
                              f"{match['scale']!r} in {fitness!r}")
    return TableSpec(path=match["path"].strip(), metric=(match["metric"] or "").strip() or None,
                     cost=(match["cost"] or "").strip() or None, scale=scale)


def _check_table(fitness: str, genome: str) -> None:
    parse_table_spec(fitness)
    if genome != "nb201":
        raise ValueError(f"fitness: a table looks genomes up by their string form, which genome {genome!r} has "
                         "not: use genome = 'nb201'")


RESUMABLE_FIELDS = {
    "store", "storage_options", "workers", "gpus_per_worker", "cpus_per_worker", "address",
    "lease_seconds", "refresh_seconds", "steps", "keep", "keep_best", "reference",
}


def _check_hparams(declared: dict[str, Any], fitness: str, genome: str) -> dict[str, Any]:
    """The declaration parsed and written back in its JSON form (so a resume compares like with like);
    with the built-in trainer, every gene must be one it reads, with values it can use."""
    try:
        genes = parse_hparams(declared)
    except GenomeError as exc:
        raise ValueError(str(exc)) from None
    if genes and is_table(fitness):
        raise ValueError(f"hparams: a table's fitness is a lookup that no training setting changes; drop "
                         f"{sorted(genes)} or train (fitness = 'train')")
    if genome == "fixed" and not any(gene.values() > 1 for gene in genes.values()):
        raise ValueError("hparams: a fixed network evolves only its genes: declare at least one that can vary "
                         "(e.g. learning_rate = 'log:0.001..0.3')")
    if fitness == "train":
        check_trainer_genes(genes)
    return hparams_json(genes)


def _check_genome_options(genome: str, options: dict[str, Any]) -> None:
    """Parse ``options`` with the genome kind's own parser, so a typo fails here, not in the first worker."""

    if genome not in BUILT_IN_GENOMES:  # a class of your own checks its options where it defines check_options
        check = getattr(genome_class(genome), "check_options", None) if OWN_GENOME.fullmatch(genome) else None
        try:
            if callable(check):
                check(dict(options))
        except GenomeError as exc:
            raise ValueError(f"genome_options: {exc}") from None
        return
    try:
        if genome == "dna":
            dna_options(SearchSpace(options=dict(options)))
        elif genome == "nb201":
            nb201_options(options)
        elif genome == "fixed":
            fixed_options(options)
        else:
            parse_options(options)
    except GenomeError as exc:
        message, named = re.subn(r"^(space\.)?options\b", "genome_options", str(exc))
        raise ValueError(message if named else f"genome_options: {message}") from None


_NAMED = re.compile(r"^([\w\[\]]+(?:\.[\w\[\]]+)*): (.*)$", re.DOTALL)


def merge_settings(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``; ``train``, ``genome_options`` and ``hparams`` merge key by key, so a config
    file's ``[train] batches`` keeps everything else of the lower layer's training."""
    out = copy.deepcopy(low)
    if high.get("genome", low.get("genome", "dna")) != low.get("genome", "dna"):
        out.pop("genome_options", None)  # the options of another genome kind mean nothing here
    for key, value in high.items():
        if key in ("train", "genome_options", "hparams") and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        message = item["msg"]
        if item["type"] == "value_error":  # our validators' messages name their field first
            message = message.removeprefix("Value error, ")
            if named := _NAMED.match(message):
                field = ".".join(filter(None, (field, named[1])))
                message = named[2]
            elif not field:
                parts.append(message)
                continue
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{field or 'config'}: {message}{shown}")
    return "; ".join(parts)


def build_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a dict (not yet validated)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {str(path)!r}: expected .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} does not parse: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a table of settings, got {type(data).__name__}")
    return data


def check_resume(stored: RunConfig, requested: RunConfig) -> None:
    """Refuse a resume whose config changes what the run computes."""
    old, new = stored.identity(), requested.identity()
    changed = sorted(k for k in old if old[k] != new.get(k))
    if changed:
        detail = ", ".join(f"{k}: stored {old[k]!r}, given {new[k]!r}" for k in changed)
        raise ConfigError(f"config conflicts with the stored run ({detail}); start a new store or drop those settings")
