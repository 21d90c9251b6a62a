"""Mutations in words (genomes.words): what `evolve lineage` and TensorBoard show for a record's mutation."""

from __future__ import annotations

import random

import pytest

from genomes import DNA, NB201, GeneticCNN, SearchSpace
from genomes.hparams import parse_hparams
from genomes.nb201.genome import OPS
from genomes.words import mutation_words

GENES = parse_hparams({"momentum": "0.5..0.99", "optimizer": "sgd,adam"})


@pytest.mark.parametrize("name, params, words", [
    ("alter-learning-rate", {"old": 0.1, "new": 0.08204809357456025}, "learning rate 0.1 → 0.082"),
    ("insert-convolution", {"after": 4, "vertex": 9, "edge": 10, "activation": "bn_relu", "stride": 1,
                            "channels": 16, "preserving": True},
     "insert conv 3x3 after vertex 4 (stride 1, 16 channels, then bn+relu, function-preserving)"),
    ("alter-number-of-channels", {"edge": 6, "old": 16, "new": 24, "seed": 7, "preserving": True},
     "channels of conv edge 6 16 → 24, function-preserving"),
    ("filter-size", {"edge": 2, "axis": "kw", "old": 3, "new": 5}, "kernel width of conv edge 2 3 → 5"),
    ("add-skip", {"edge": 11, "src": 1, "dst": 5, "preserving": True},
     "add skip vertex 1 → vertex 5, gated and born at zero"),
    ("remove-convolution", {"edge": 4, "removed_vertex": 3, "into": 1},
     "remove conv edge 4 (vertex 3 merged into vertex 1)"),
    ("bit-flip", {"flipped": [[0, 2], [0, 5], [2, 1]]}, "flip stage 0 bits 2, 5; stage 2 bit 1"),
    ("edge", {"edge": 3, "from": "none", "to": "nor_conv_3x3"}, "edge 3 none → nor_conv_3x3"),
    ("crossover", {"swapped_stages": [1]}, "crossover, swapping stages 1"),
    ("identity", {"reason": "params 210,000 > 200,000"}, "no change (params 210,000 > 200,000)"),
    ("alter-hparams", {"hparams": {"weight_decay": {"old": 0.0001, "new": 0.0003}}}, "weight decay 0.0001 → 0.0003"),
    ("edge", {"edge": 1, "from": "skip_connect", "to": "none", "hparams": {"optimizer": {"old": "sgd", "new": "adam"}}},
     "edge 1 skip_connect → none; optimizer sgd → adam"),
    ("swap-block", {"block": 2, "with_block": 3}, "swap block block 2, with block 3"),  # a class of your own
    (None, None, "initial"),
])
def test_mutations_read_as_words(name, params, words):
    assert mutation_words(name, params) == words


def test_a_record_whose_parameters_do_not_fit_its_name_still_reads():
    assert mutation_words("add-skip", {"from": 1}) == "add skip from 1"


@pytest.mark.parametrize("kind, options", [
    (DNA, {}), (DNA, {"morphisms": True, "initial_convs": 2, "initial_channels": 4}),
    (GeneticCNN, {}), (NB201, {}),
])
def test_every_mutation_the_built_in_kinds_make_reads_without_json(kind, options):
    space = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=300_000, options=options,
                        hparams=GENES)
    rng = random.Random(0)
    genome, seen = kind.initial(rng, space), set()
    for _ in range(300):
        child, mutation = genome.mutate(rng, space)
        words = mutation_words(mutation.name, mutation.params)
        plain = words
        for op in OPS:  # NAS-Bench-201's operation names are its own words
            plain = plain.replace(op, "")
        assert "{" not in words and "_" not in plain, (mutation, words)
        assert words != mutation.name or not mutation.params, (mutation, words)
        seen.add(mutation.name)
        genome = child
    assert len(seen) >= (3 if kind is DNA else 2)
