"""Training and measuring a child: datasets, the trainer, fitness (built-in, user, synthetic), LeNet-5, pruning."""
