"""The search: a worker's view of the population, selection and death, breeding, the worker loop."""
