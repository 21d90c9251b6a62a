"""The DNA graph genome of Real et al. 2017: the genome, its mutations, its network, its pruning."""

from genomes.dna.genome import DNA

__all__ = ["DNA"]
