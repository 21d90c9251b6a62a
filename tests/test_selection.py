import random

from hypothesis import given
from hypothesis import strategies as st

from evolve.engine.selection import Aging, Choice, Member, Tournament

members = st.lists(st.floats(0, 1, allow_nan=False), min_size=5, max_size=40).map(
    lambda fs: [Member(step=i * 3, fitness=f) for i, f in enumerate(fs)])


@given(members, st.integers(0, 2**32))
def test_tournament_parent_is_the_better_of_two_live(live, seed):
    choice = Tournament().choose(live, random.Random(seed))
    by_step = {m.step: m for m in live}
    assert choice.parent != choice.loser
    assert by_step[choice.parent].fitness >= by_step[choice.loser].fitness


@given(members, st.integers(0, 2**32))
def test_aging_kills_the_oldest_and_breeds_from_the_sample_best(live, seed):
    choice = Aging(sample_size=5).choose(live, random.Random(seed))
    assert choice.loser == min(m.step for m in live)
    sample = random.Random(seed).sample(live, 5)
    assert choice.parent == max(sample, key=lambda m: (m.fitness, -m.step)).step


@given(members, st.integers(0, 2**32))
def test_a_choice_draws_what_sampling_the_list_itself_draws(live, seed):
    """Drawing indices leaves every seeded run's choices as they were when the list was sampled."""
    a, b = random.Random(seed).sample(live, 2)
    winner, loser = (a, b) if a.fitness >= b.fitness else (b, a)
    assert Tournament().choose(live, random.Random(seed)) == Choice(winner.step, loser.step)


def test_same_seed_same_choice():
    live = [Member(i, random.Random(i).random()) for i in range(30)]
    assert Tournament().choose(live, random.Random(7)) == Tournament().choose(live, random.Random(7))


@given(members, st.integers(0, 40), st.integers(0, 2**32))
def test_a_prefix_of_the_live_list_reads_as_its_copy_would(live, n, seed):
    """Population's choice reads the first n live members in place; a strategy sees what the copy holds."""
    from evolve.engine.population import _Prefix

    n = min(n, len(live))
    prefix, copy = _Prefix(live, n), live[:n]
    assert len(prefix) == n and list(prefix) == copy and prefix[1:3] == copy[1:3]
    assert [prefix[-i] for i in range(1, n + 1)] == [copy[-i] for i in range(1, n + 1)]
    for bad in (n, -n - 1):
        try:
            prefix[bad]
        except IndexError:
            continue
        raise AssertionError(f"index {bad} of a prefix of {n}")
    if n >= 5:
        assert Aging(5).choose(prefix, random.Random(seed)) == Aging(5).choose(copy, random.Random(seed))
        assert Tournament().choose(prefix, random.Random(seed)) == Tournament().choose(copy, random.Random(seed))
