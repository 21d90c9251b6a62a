"""NAS-Bench-201 (Dong & Yang, ICLR 2020): the six-edge cell genome and the benchmark's network around it."""

from genomes.nb201.genome import NB201

__all__ = ["NB201"]
