"""The old path of ``evolve.store.records``, kept because 0.1.0's public API named its types here.

``tests/api_surface.txt`` lists ``evolve.Individual``'s field types, and 0.1.0 printed them as
``evolve.records.Mutation``, ``evolve.records.Metrics``, ... Code written against that, for example
``from evolve.records import Individual``, still imports; new code imports ``evolve.store.records``.
"""

from evolve.store.records import (  # noqa: F401
                                  SCHEMA,
                                  Adoption,
                                  Claim,
                                  ExportRow,
                                  Individual,
                                  Metrics,
                                  Mutation,
                                  RecordError,
                                  Selection,
                                  Tested,
                                  Timings,
                                  Tombstone,
                                  Weights,
                                  model_for,
                                  parse,
                                  problem,
                                  schema_problem,
)
