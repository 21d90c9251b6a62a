"""What evolves: the DNA graph of Real et al. 2017, the Genetic-CNN bitstring of Xie & Yuille 2017 and
the NAS-Bench-201 cell of Dong & Yang 2020."""

from __future__ import annotations

from typing import Any, Mapping

from genomes.base import Genome, GenomeError, Inheritance, Mutation, SearchSpace, inherit_weights
from genomes.dna.genome import DNA
from genomes.gcnn.genome import GeneticCNN
from genomes.nb201.genome import NB201

KINDS: dict[str, type] = {DNA.kind: DNA, GeneticCNN.kind: GeneticCNN, NB201.kind: NB201}


def genome_class(kind: str) -> type:
    """The class for a kind name ('dna', 'gcnn' or 'nb201')."""
    try:
        return KINDS[kind]
    except KeyError:
        raise GenomeError(f"unknown genome kind {kind!r}; expected one of {sorted(KINDS)}") from None


def genome_from_json(data: Mapping[str, Any]) -> Genome:
    """Parse any genome JSON by its 'kind' field."""
    if not isinstance(data, Mapping):
        raise GenomeError(f"genome JSON must be an object, got {type(data).__name__}")
    if "kind" not in data:
        raise GenomeError("genome JSON has no 'kind' field")
    return genome_class(data["kind"]).from_json(data)


__all__ = [
    "DNA",
    "GeneticCNN",
    "Genome",
    "GenomeError",
    "Inheritance",
    "KINDS",
    "NB201",
    "Mutation",
    "SearchSpace",
    "genome_class",
    "genome_from_json",
    "inherit_weights",
]
