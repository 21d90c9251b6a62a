"""Hyperparameter genes: declarations refused by name, draws and mutations within every declared range, JSON round
trips, the genes of every genome kind, and the built-in trainer reading the genes it knows."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evolve.config import ConfigError, build_config
from evolve.training.genes import settings_for
from genomes import Fixed, GenomeError, SearchSpace, genome_class, genome_from_json
from genomes.hparams import (
    ChoiceGene,
    FloatGene,
    IntGene,
    check_values,
    cross_values,
    draw_values,
    mutate_values,
    parse_gene,
    parse_hparam_line,
    parse_hparams,
)
from genomes.modules import add_dropout, swap_activations

# ----- strategies ----------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def float_genes(draw) -> FloatGene:
    log = draw(st.booleans())
    low = draw(st.floats(min_value=1e-6, max_value=1e3) if log else finite)
    high = low + draw(st.floats(min_value=0, max_value=1e3))
    return FloatGene(low, high, log)


@st.composite
def int_genes(draw) -> IntGene:
    low = draw(st.integers(-1000, 1000))
    step = draw(st.integers(1, 16))
    return IntGene(low, low + step * draw(st.integers(0, 20)), step)


scalars = st.one_of(st.text(min_size=1, max_size=6), st.integers(-100, 100), st.booleans(),
                    st.floats(min_value=-10, max_value=10, allow_nan=False))
choice_genes = st.lists(scalars, min_size=1, max_size=6, unique_by=lambda v: (type(v), v)).map(
    lambda values: ChoiceGene(tuple(values)))
genes_st = st.one_of(float_genes(), int_genes(), choice_genes)
declarations = st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), genes_st, min_size=1, max_size=5)


# ----- draws and mutations ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(declarations, st.integers(0, 2**32))
def test_draws_and_mutations_stay_within_every_declared_range(genes, seed):
    rng = random.Random(seed)
    values = draw_values(genes, rng)
    assert check_values(genes, values) == values
    for _ in range(10):
        new, changes = mutate_values(genes, values, rng)
        assert check_values(genes, new) == new
        mutable = [n for n, g in genes.items() if g.values() > 1]
        assert bool(changes) == bool(mutable)
        for name, change in changes.items():
            assert change == {"old": values[name], "new": new[name]}
            assert type(new[name]) is not type(values[name]) or new[name] != values[name]  # a change changes
        assert all(new[n] == values[n] for n in genes if n not in changes)
        values = new


@settings(max_examples=100, deadline=None)
@given(declarations, st.integers(0, 2**32))
def test_uniform_crossover_gives_complementary_children(genes, seed):
    rng = random.Random(seed)
    a, b = draw_values(genes, rng), draw_values(genes, rng)
    c, d = cross_values(a, b, rng)
    for name in genes:
        assert {json.dumps(c[name]), json.dumps(d[name])} == {json.dumps(a[name]), json.dumps(b[name])}
    assert check_values(genes, c) == c and check_values(genes, d) == d


@settings(max_examples=200, deadline=None)
@given(genes_st)
def test_every_gene_type_round_trips_through_json(gene):
    text = json.dumps(gene.to_json())
    assert parse_gene(json.loads(text), "hparams.x") == gene
    assert parse_hparams({"x": json.loads(text)}) == {"x": gene}


@settings(max_examples=100, deadline=None)
@given(declarations, st.integers(0, 2**32), st.sampled_from(["dna", "gcnn", "nb201", "fixed"]))
def test_every_kind_carries_its_genes_through_json_and_mutation(genes, seed, kind):
    genes = {name: gene for name, gene in genes.items() if name != "learning_rate"}
    space = SearchSpace(input_shape=(1, 12, 12), num_classes=3, max_params=10**7, hparams=genes,
                        options={"nodes": [3]} if kind == "gcnn" else {})
    rng = random.Random(seed)
    genome = genome_class(kind).initial(rng, space)
    for _ in range(4):
        carried = {k: v for k, v in genome.genes().items() if k != "learning_rate" or kind != "dna"}
        assert check_values(genes, carried) == carried
        assert genome_from_json(json.loads(json.dumps(genome.to_json()))) == genome
        genome, mutation = genome.mutate(rng, space)
        json.dumps(mutation.to_json())


def test_a_mutation_changes_the_architecture_the_genes_or_both():
    space = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=2_000_000,
                        hparams={"dropout": "0..0.5", "optimizer": "sgd,adam"})
    rng = random.Random(0)
    genome = genome_class("nb201").initial(rng, space)
    parts = {"architecture": 0, "genes": 0, "both": 0}
    for _ in range(300):
        child, mutation = genome.mutate(rng, space)
        arch_changed = child.ops != genome.ops
        genes_changed = child.genes() != genome.genes()
        parts["both" if arch_changed and genes_changed else "genes" if genes_changed else "architecture"] += 1
        assert ("hparams" in mutation.params) == genes_changed
        assert (mutation.name == "alter-hparams") == (genes_changed and not arch_changed)
    assert all(60 < n < 140 for n in parts.values()), parts  # a third each


def test_a_run_without_genes_mutates_as_before():
    """No genes declared: no draw is spent on the choice, so old runs replay (the golden files hold it)."""
    plain = SearchSpace(input_shape=(3, 32, 32), num_classes=10, max_params=2_000_000)
    for kind in ("gcnn", "nb201"):
        genome = genome_class(kind).initial(random.Random(1), plain)
        assert "hparams" not in genome.to_json()
        a, b = random.Random(5), random.Random(5)
        assert genome.mutate(a, plain) == genome._flip(b, plain) if kind == "gcnn" else \
            genome.mutate(a, plain) == genome._mutate_edge(b, plain)


def test_dna_learning_rate_is_a_gene_mutated_by_its_own_rule():
    space = SearchSpace(input_shape=(1, 12, 12), num_classes=3, max_params=10**6,
                        hparams={"learning_rate": "log:0.01..0.2"}, options={"initial_convs": 1})
    rng = random.Random(3)
    genome = genome_class("dna").initial(rng, space)
    assert 0.01 <= genome.lr <= 0.2 and genome.to_json()["hparams"] == {"learning_rate": genome.lr}
    for _ in range(200):
        genome, mutation = genome.mutate(rng, space)
        assert 0.01 <= genome.lr <= 0.2
        assert "hparams" not in mutation.params  # the learning rate is the graph's own alter-learning-rate


# ----- declarations refused by name ------------------------------------------------------------


@pytest.mark.parametrize(("declared", "fragments"), [
    ({"lr": {"float": [0.3, 0.1]}}, ["hparams.lr", "0.3", "exceeds"]),
    ({"lr": {"float": [0, 0.1], "log": True}}, ["hparams.lr", "above 0"]),
    ({"lr": {"float": [0.1, 0.2], "log": "yes"}}, ["hparams.lr.log", "'yes'"]),
    ({"lr": {"float": [0.1]}}, ["hparams.lr.float", "[0.1]"]),
    ({"lr": {"float": [0.1, "x"]}}, ["hparams.lr", "'x'"]),
    ({"lr": {"float": [0.1, 0.2], "int": [1, 2]}}, ["hparams.lr", "exactly one"]),
    ({"lr": {"float": [0.1, 0.2], "step": 2}}, ["hparams.lr.step", "unknown"]),
    ({"bs": {"int": [16, 100], "step": 16}}, ["hparams.bs", "step 16", "84"]),
    ({"bs": {"int": [16.5, 100]}}, ["hparams.bs", "16.5"]),
    ({"opt": {"choice": []}}, ["hparams.opt.choice", "[]"]),
    ({"opt": {"choice": ["sgd", "sgd"]}}, ["hparams.opt.choice", "'sgd'", "twice"]),
    ({"opt": {"choice": [["sgd"]]}}, ["hparams.opt.choice", "['sgd']"]),
    ({"opt": 3}, ["hparams.opt", "3"]),
    ({"opt": "1..x"}, ["hparams.opt", "'x'"]),
    ({"opt": "log:-1..2"}, ["hparams.opt", "above 0"]),
    ({"9lives": "1,2"}, ["hparams", "'9lives'", "identifier"]),
])
def test_a_bad_declaration_is_refused_naming_the_gene_and_the_value(declared, fragments):
    with pytest.raises(GenomeError) as caught:
        parse_hparams(declared)
    for fragment in fragments:
        assert fragment in str(caught.value)
    with pytest.raises(ConfigError) as caught:  # and through the config, with the built-in trainer's check too
        build_config({"hparams": declared, "fitness": "synthetic"})
    assert fragments[0] in str(caught.value)


@pytest.mark.parametrize(("declared", "fragments"), [
    ({"colour": "red,blue"}, ["hparams.colour", "reads no gene"]),
    ({"optimizer": "sgd,rmsprop"}, ["hparams.optimizer", "rmsprop"]),
    ({"optimizer": "0..1"}, ["hparams.optimizer", "choice"]),
    ({"dropout": "0..1"}, ["hparams.dropout", "[0, 1)"]),
    ({"batch_size": "0.5..2.5"}, ["hparams.batch_size", "an int"]),
    ({"activation": "relu,swish"}, ["hparams.activation", "swish"]),
    ({"learning_rate": "-1..1"}, ["hparams.learning_rate", "> 0"]),
])
def test_the_built_in_trainer_refuses_genes_it_cannot_read(declared, fragments):
    with pytest.raises(ConfigError) as caught:
        build_config({"hparams": declared})
    for fragment in fragments:
        assert fragment in str(caught.value)
    build_config({"hparams": declared, "fitness": "synthetic"})  # your own fitness takes any gene


def test_one_line_specs_parse_as_their_tables():
    assert parse_hparam_line("lr=log:1e-3..0.3") == ("lr", FloatGene(1e-3, 0.3, True))
    assert parse_hparam_line("dropout=0..0.5") == ("dropout", FloatGene(0.0, 0.5))
    assert parse_hparam_line("batch_size=16..128/16") == ("batch_size", IntGene(16, 128, 16))
    assert parse_hparam_line("batches=50..150") == ("batches", IntGene(50, 150, 1))
    assert parse_hparam_line("opt=sgd,adam") == ("opt", ChoiceGene(("sgd", "adam")))
    assert parse_hparam_line("width=8,16,32") == ("width", ChoiceGene((8, 16, 32)))
    with pytest.raises(GenomeError, match="NAME=SPEC"):
        parse_hparam_line("lr")
    a = build_config({"hparams": {"learning_rate": "log:0.001..0.3"}})
    b = build_config({"hparams": {"learning_rate": {"float": [0.001, 0.3], "log": True}}})
    assert a.hparams == b.hparams  # stored in one form, so a resume compares like with like


def test_genes_refused_where_nothing_reads_them():
    with pytest.raises(ConfigError, match="table's fitness"):
        build_config({"genome": "nb201", "fitness": "table:nb201-cifar10", "hparams": {"learning_rate": "0.1..0.2"}})
    with pytest.raises(ConfigError, match="evolves only its genes"):
        build_config({"genome": "fixed"})


# ----- the trainer reads the genes ----------------------------------------------------------------


def test_genes_become_the_childs_training_settings():
    config = build_config({}).train
    plain = settings_for(config, {})
    assert plain.train is config and plain.optimizer == "nesterov" and plain.dropout == 0.0
    tuned = settings_for(config, {"learning_rate": 0.01, "batch_size": 32, "batches": 7, "optimizer": "adam",
                                  "dropout": 0.25, "label_smoothing": 0.1, "shift": 0, "weight_decay": 0.0})
    assert (tuned.train.learning_rate, tuned.train.batch_size, tuned.train.batches) == (0.01, 32, 7)
    assert (tuned.optimizer, tuned.dropout, tuned.label_smoothing, tuned.train.shift) == ("adam", 0.25, 0.1, 0)


def test_activation_and_dropout_change_the_module_but_no_key():
    genome = Fixed("lenet5", {})
    module = genome.to_module((1, 28, 28), 10)
    keys = set(module.state_dict())
    assert swap_activations(module, "gelu") == 4
    assert not any(isinstance(m, torch.nn.ReLU) for m in module.modules())
    hook = add_dropout(module, 0.5)
    assert set(module.state_dict()) == keys
    x = torch.randn(8, 1, 28, 28)
    module.train()
    hook.generator = torch.Generator().manual_seed(0)
    a = module(x)
    hook.generator = torch.Generator().manual_seed(0)
    assert torch.equal(a, module(x))  # masks drawn from the trainer's generator
    module.eval()
    assert torch.equal(module(x), module(x))


def test_a_fixed_lenet_trains_with_its_genes_and_records_them(tmp_path):
    from evolve.runner.launch import open_run, run_in_process
    from evolve.store.snapshot import read_records

    config = build_config({
        "store": str(tmp_path / "run"), "genome": "fixed", "dataset": "digits", "population": 3, "steps": 3,
        "workers": 1, "final_batches": 0, "train": {"batches": 20},
        "hparams": {"learning_rate": "log:0.01..0.3", "optimizer": "sgd,adam", "activation": "relu,elu",
                    "dropout": "0..0.3", "init": "kaiming,orthogonal", "batch_size": "16..64/16"},
    })
    store, config, space = open_run(config)
    run_in_process(store, config, space)
    records = list(read_records(store, store.list_keys("individuals/")).values())
    assert len(records) == 6
    for record in records:
        genes = record["genome"]["hparams"]
        assert set(genes) == {"learning_rate", "optimizer", "activation", "dropout", "init", "batch_size"}
        assert record["status"] == "ok" and math.isfinite(record["fitness"])
    children = [r for r in records if r["step"] >= 3]
    assert all(r["mutation"]["name"] == "alter-hparams" for r in children)

    # the views know the genes: a Parquet column each, an HParams column each, the changes in words
    from typer.testing import CliRunner

    from evolve.cli import app
    from evolve.store.records import Individual
    from evolve.views.parquet import table
    from evolve.views.tensorboard import hparams_of

    frame = table(store).to_pandas().set_index("step")
    assert frame["hp_optimizer"].isin(["sgd", "adam"]).all() and frame["hp_batch_size"].dtype == "int64"
    assert frame.loc[4, "hp_learning_rate"] == next(r for r in records if r["step"] == 4)["genome"]["hparams"][
        "learning_rate"]
    columns = hparams_of(Individual.model_validate(children[0]), space)
    assert {"learning_rate", "optimizer", "activation", "dropout", "init", "batch_size"} <= set(columns)
    lineage = CliRunner().invoke(app, ["lineage", str(tmp_path / "run"), str(children[-1]["step"])])
    assert lineage.exit_code == 0 and " → " in lineage.output and "{" not in lineage.output, lineage.output


def test_a_fixed_network_of_your_own_trains_and_a_bad_one_is_refused_in_one_line(tmp_path, monkeypatch):
    from pathlib import Path

    from evolve.runner.launch import open_run, run_in_process
    from evolve.store.backend import Store

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # tests/networks.py, as an installed module would be
    settings = {"genome": "fixed", "dataset": "digits", "population": 2, "steps": 2, "workers": 1,
                "final_batches": 0, "train": {"batches": 5}, "hparams": {"activation": "relu,elu"}}
    store, config, space = open_run(build_config({**settings, "store": str(tmp_path / "run"),
                                                  "genome_options": {"network": "networks:tiny"}}))
    run_in_process(store, config, space)
    record = Store.open(str(tmp_path / "run")).read_json("individuals/000000000003.json")
    assert record["genome"]["network"] == "networks:tiny" and record["metrics"]["params"] == 4 * 10 + 4 * 64 * 10 + 10
    for network, fragment in [("networks:not_a_module", "not a torch.nn.Module"), ("networks:gone", "has no 'gone'"),
                              ("nowhere:tiny", "cannot import 'nowhere'")]:
        with pytest.raises(GenomeError, match=fragment):
            open_run(build_config({**settings, "store": str(tmp_path / network.replace(":", "-")),
                                   "genome_options": {"network": network}}))
        assert not (tmp_path / network.replace(":", "-")).exists()
