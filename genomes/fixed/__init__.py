"""A fixed network (LeNet-5, or yours) whose hyperparameter genes alone evolve."""

from genomes.fixed.genome import Fixed

__all__ = ["Fixed"]
