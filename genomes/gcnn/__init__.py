"""Genetic CNN (Xie & Yuille 2017): the bitstring genome, its network, its pruning."""

from genomes.gcnn.genome import GeneticCNN

__all__ = ["GeneticCNN"]
