"""Train one child and measure its fitness: validation accuracy, never test accuracy.

The dataset sits on the device for the whole run; minibatches are slices of it.
On CUDA the step runs under bf16 autocast with channels_last tensors.
A NaN loss, an out-of-memory genome or one over the parameter bound scores 0
with the reason recorded; the worker goes on.
"""

from __future__ import annotations

import math
import time
from typing import Mapping

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from evolve.config import TrainConfig
from evolve.data import DeviceData
from evolve.evaluate import Outcome
from genomes import Genome, inherit_weights


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def weights_to_bytes(module: nn.Module) -> bytes:
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    return save_safetensors(state)


def weights_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes (never pickle: a store must not be a way to run code)."""
    return load_safetensors(data)


def count_flops(module: nn.Module, sample: torch.Tensor) -> int:
    """Forward FLOPs for one input, counted by torch's FLOP counter."""
    counter = FlopCounterMode(display=False)
    was_training = module.training
    module.eval()
    with torch.no_grad(), counter:
        module(sample)
    module.train(was_training)
    return int(counter.get_total_flops())


class Trainer:
    """Trains children on one device with data resident there."""

    def __init__(self, splits: DeviceData, config: TrainConfig, device: torch.device, max_params: int) -> None:
        self.splits = splits
        self.config = config
        self.device = device
        self.max_params = max_params
        self.cuda = device.type == "cuda"

    def _autocast(self):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.cuda)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def train(self, genome: Genome, parent_weights: Mapping[str, torch.Tensor] | None, seed: int) -> Outcome:
        splits = self.splits
        params = genome.param_count(splits.input_shape, splits.num_classes)
        if params > self.max_params:
            return Outcome(fitness=0.0, status="failed", reason=f"over max_params ({params:,} > {self.max_params:,})",
                           params=params, device=str(self.device))
        try:
            return self._train(genome, parent_weights, seed, params)
        except torch.cuda.OutOfMemoryError:
            return self._oom(params)
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                return self._oom(params)
            raise

    def _oom(self, params: int) -> Outcome:
        if self.cuda:
            torch.cuda.empty_cache()
        return Outcome(fitness=0.0, status="failed", reason="out of memory", params=params, device=str(self.device))

    def _train(self, genome: Genome, parent_weights: Mapping[str, torch.Tensor] | None, seed: int,
               params: int) -> Outcome:
        cfg, splits = self.config, self.splits
        torch.manual_seed(seed)
        model = genome.to_module(splits.input_shape, splits.num_classes)
        inherited = 0.0
        if parent_weights is not None and cfg.inherit_weights:
            inherited = inherit_weights(model, parent_weights).fraction
        model = model.to(self.device)
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)
        flops = count_flops(model, self._prepare(splits.x_val[:1]))
        lr = genome.learning_rate() or cfg.learning_rate
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        n = splits.x_train.shape[0]
        batch = min(cfg.batch_size, n)
        order = torch.randperm(n, device=self.device, generator=generator)
        cursor = 0
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        loss = torch.zeros((), device=self.device)
        model.train()
        start = time.perf_counter()
        for step in range(cfg.batches):
            if cursor + batch > n:
                order = torch.randperm(n, device=self.device, generator=generator)
                cursor = 0
            idx = order[cursor:cursor + batch]
            cursor += batch
            with self._autocast():
                loss = F.cross_entropy(model(self._prepare(splits.x_train[idx])), splits.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            finite &= torch.isfinite(loss.detach())
            if step % 50 == 49 and not bool(finite):
                break
        if self.cuda:
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - start
        final_loss = float(loss.detach())
        if not bool(finite) or not math.isfinite(final_loss):
            return Outcome(fitness=0.0, status="failed", reason="nan loss", params=params, flops=flops,
                           inherited=inherited, train_seconds=train_seconds, device=str(self.device))
        start = time.perf_counter()
        val = self.accuracy(model, splits.x_val, splits.y_val)
        test = self.accuracy(model, splits.x_test, splits.y_test)
        return Outcome(
            fitness=val, val_accuracy=val, test_accuracy=test, final_loss=final_loss, params=params,
            flops=flops, inherited=inherited, train_seconds=train_seconds,
            eval_seconds=time.perf_counter() - start, device=str(self.device), weights=weights_to_bytes(model),
        )

    @torch.no_grad()
    def accuracy(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        if x.shape[0] == 0:
            return 0.0
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        step = self.config.eval_batch_size
        for i in range(0, x.shape[0], step):
            with self._autocast():
                logits = model(self._prepare(x[i:i + step]))
            correct += (logits.argmax(dim=1) == y[i:i + step]).sum()
        return float(correct) / x.shape[0]
