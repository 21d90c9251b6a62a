"""What evolves: the DNA graph of Real et al. 2017, the Genetic-CNN bitstring of Xie & Yuille 2017 and
the NAS-Bench-201 cell of Dong & Yang 2020; and a fixed network whose hyperparameter genes alone evolve."""

from __future__ import annotations

import re
from typing import Any, Mapping

from genomes.base import (
    OPTIONAL,
    REQUIRED,
    Genome,
    GenomeBase,
    GenomeError,
    Inheritance,
    Mutation,
    SearchSpace,
    import_attribute,
    inherit_weights,
)
from genomes.dna.genome import DNA
from genomes.fixed.genome import Fixed
from genomes.gcnn.genome import GeneticCNN
from genomes.nb201.genome import NB201

KINDS: dict[str, type] = {DNA.kind: DNA, GeneticCNN.kind: GeneticCNN, NB201.kind: NB201, Fixed.kind: Fixed}


OWN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w]*")
"""A genome class of your own, by the name a worker imports it by: ``package.module:Class``."""


def genome_class(kind: str) -> type:
    """The class for a kind name ('dna', 'gcnn', 'nb201' or 'fixed'), or a class of your own by its import
    name ('package.module:Class', whose ``kind`` is that name)."""
    if kind in KINDS:
        return KINDS[kind]
    if isinstance(kind, str) and OWN.fullmatch(kind):
        return _import_class(kind)
    raise GenomeError(f"unknown genome kind {kind!r}; expected one of {sorted(KINDS)} or 'package.module:Class'")


def _import_class(name: str) -> type:
    module_name, _, attribute = name.partition(":")
    try:
        cls = import_attribute(name)
    except AttributeError:
        cls = None
    except ImportError as exc:
        raise GenomeError(f"genome {name!r}: cannot import {module_name!r} ({exc})") from None
    if not isinstance(cls, type):
        raise GenomeError(f"genome {name!r}: {module_name!r} has no class {attribute!r}")
    missing = [method for method in REQUIRED if not callable(getattr(cls, method, None))]
    if missing:
        raise GenomeError(f"genome {name!r}: the class lacks {', '.join(missing)} (required by genomes.base.Genome; "
                          "`evolve doctor --genome` checks a class)")
    if getattr(cls, "kind", None) != name:
        raise GenomeError(f"genome {name!r}: its kind must be the name it is imported by, {name!r} (so every reader "
                          f"of the store finds it), got {getattr(cls, 'kind', None)!r}")
    return cls


def genome_from_json(data: Mapping[str, Any]) -> Genome:
    """Parse any genome JSON by its 'kind' field."""
    if not isinstance(data, Mapping):
        raise GenomeError(f"genome JSON must be an object, got {type(data).__name__}")
    if "kind" not in data:
        raise GenomeError("genome JSON has no 'kind' field")
    return genome_class(data["kind"]).from_json(data)


__all__ = [
    "DNA",
    "Fixed",
    "GeneticCNN",
    "Genome",
    "GenomeBase",
    "GenomeError",
    "Inheritance",
    "KINDS",
    "OPTIONAL",
    "REQUIRED",
    "NB201",
    "Mutation",
    "SearchSpace",
    "genome_class",
    "genome_from_json",
    "inherit_weights",
]
