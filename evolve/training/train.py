"""Train one child and measure its fitness: validation accuracy, never test accuracy.

The dataset sits on the device for the whole run; minibatches are slices of it.
On CUDA the step runs under bf16 autocast with channels_last tensors.
A NaN loss, an out-of-memory genome or one over the parameter bound scores 0
with the reason recorded; the worker goes on.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from evolve.config import OPTIMIZERS, TrainConfig
from evolve.training.datasets import Dataset
from evolve.training.genes import Settings, settings_for
from evolve.training.outcome import Outcome
from genomes import Genome, Mutation
from genomes.hparams import genes_of
from genomes.modules import INITS, ClassifierDropout, add_dropout, apply_architecture_genes, initialise


@dataclass
class DeviceData:
    """A dataset's splits as torch tensors resident on one device (see :func:`to_device`)."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    device: torch.device
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def to_device(ds: Dataset, device: Any = "cpu") -> DeviceData:
    """Copy every split onto ``device`` once; the trainer slices minibatches there."""
    dev = torch.device(device)

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    return DeviceData(
        name=ds.name, input_shape=ds.input_shape, num_classes=ds.num_classes, device=dev,
        x_train=put(ds.x_train), y_train=put(ds.y_train), x_val=put(ds.x_val), y_val=put(ds.y_val),
        x_test=put(ds.x_test), y_test=put(ds.y_test),
    )


@dataclass(frozen=True)
class Fit:
    finite: bool
    loss: float
    seconds: float


def build_module(genome: Genome, input_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """``genome``'s module with its initialisation drawn from ``seed`` alone, and what its genes change
    in it (``genomes.modules``: the activation, the initialisation scheme).

    torch's default generator is process-global: workers running as threads of one process would
    race on it, so the draw happens under a lock with the generator's state put back afterwards.
    """
    genes = genes_of(genome)
    with _INIT_LOCK:
        state = torch.random.get_rng_state()
        try:
            torch.default_generator.manual_seed(seed)  # the CPU's alone: torch.manual_seed would reseed CUDA's too
            module = apply_architecture_genes(genome.to_module(input_shape, num_classes), genes)
            if genes.get("init") in INITS:
                initialise(module, str(genes["init"]))
            return module
        finally:
            torch.random.set_rng_state(state)


_INIT_LOCK = threading.Lock()
_MODULE_STREAM = 0x5EED_D809
"""Mixed into a training's seed for its modules' own draws, so they are not its batch order's stream."""


def seed_modules(model: nn.Module, generator: torch.Generator) -> None:
    """Hand ``generator`` to every submodule that draws its own randomness (a ``generator``
    attribute, as ``genomes.gcnn.net.SeededDropout``): never torch's process-global one,
    which workers running as threads of one process share."""
    for module in model.modules():
        if hasattr(module, "generator"):
            module.generator = generator
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, ClassifierDropout):
                hook.generator = generator


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """sgd and nesterov (SGD with ``momentum``; Nesterov's where momentum > 0), adam and adamw (``momentum``
    as their beta1; adamw's decay decoupled from the gradient)."""
    params = model.parameters()
    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov" and momentum > 0,
                               weight_decay=weight_decay)
    betas = (momentum, 0.999)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {name!r}")


def learning_rates(config: TrainConfig, peak: float, batches: int) -> list[float]:
    """The rate of each of ``batches`` steps under ``config.schedule``, peaking at ``peak``.

    ``warmup`` is a linear rise to the schedule's rate (constant, cosine, staged) or one-cycle's cosine
    rise from peak / 25; cosine and one-cycle fall over the batches after it, staged keeps its stages.
    """
    warm = int(config.warmup * batches)
    rates = []
    for step in range(batches):
        if step < warm and config.schedule == "one-cycle":
            rates.append(peak * (0.04 + 0.48 * (1 - math.cos(math.pi * (step + 1) / warm))))
            continue
        if config.schedule in ("cosine", "one-cycle"):
            t = max(step - warm, 0) / max(batches - warm, 1)
            rate = peak * 0.5 * (1 + math.cos(math.pi * t))
        elif config.schedule == "staged":
            rate = peak * [f for start, f in config.stages if start <= step / batches][-1]
        else:
            rate = peak
        rates.append(rate * (step + 1) / warm if step < warm else rate)
    return rates


def augment(x: torch.Tensor, kind: str, shift: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "affine":
        return _affine(x, shift, generator)
    return _shift(x, kind, shift, generator)


def _affine(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image rotated by up to 12 degrees, scaled by up to 10% and moved by up to ``shift`` pixels
    (bilinear; the border repeated into the gaps): the usual augmentation for small digit datasets."""
    n, _, h, w = x.shape
    r = torch.rand(4, n, device=x.device, generator=generator) * 2 - 1
    angle, scale = r[0] * math.radians(12), 1 + 0.1 * r[1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, r[2] * 2 * shift / w], 1),
                         torch.stack([sin, cos, r[3] * 2 * shift / h], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _shift(x: torch.Tensor, kind: str, shift: int, generator: torch.Generator) -> torch.Tensor:
    """A batch with each image moved by up to ``shift`` pixels, the border repeated into the gap (after
    normalisation a zero fill would be the mean pixel: a grey frame on MNIST that no test image has);
    for crop-flip also mirrored left-right at random."""
    if kind == "none" or (shift == 0 and kind == "shift"):
        return x
    n, _, h, w = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")  # background, not the mean pixel
        offsets = torch.randint(0, 2 * shift + 1, (2, n), device=x.device, generator=generator)
        rows = (torch.arange(h, device=x.device)[None, :] + offsets[0][:, None])[:, None, :, None]
        cols = (torch.arange(w, device=x.device)[None, :] + offsets[1][:, None])[:, None, None, :]
        padded = padded.gather(2, rows.expand(n, x.shape[1], h, w + 2 * shift))
        x = padded.gather(3, cols.expand(n, x.shape[1], h, w))
    if kind == "crop-flip":
        flip = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


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

    def train(self, genome: Genome, parent_weights: Mapping[str, torch.Tensor] | None, seed: int,
              mutation: Mutation | None = None) -> Outcome:
        """Build ``genome``, take what it inherits from ``parent_weights`` (shaped by ``mutation``), train it."""
        splits = self.splits
        params = genome.param_count(splits.input_shape, splits.num_classes)
        if params > self.max_params:
            return Outcome(fitness=0.0, status="failed", reason=f"over max_params ({params:,} > {self.max_params:,})",
                           params=params, device=str(self.device))
        try:
            return self._train(genome, parent_weights, seed, params, mutation)
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
               params: int, mutation: Mutation | None) -> Outcome:
        splits = self.splits
        genes = genes_of(genome)
        settings = settings_for(self.config, genes)
        cfg = settings.train
        model = build_module(genome, splits.input_shape, splits.num_classes, seed)
        add_dropout(model, settings.dropout)
        inherited = 0.0
        if parent_weights is not None and cfg.inherit_weights:
            inherited = genome.inherit(model, parent_weights, mutation).fraction
        model = model.to(self.device)
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)
        flops = count_flops(model, self._prepare(splits.x_val[:1]))
        lr = cfg.learning_rate if "learning_rate" in genes else genome.learning_rate() or cfg.learning_rate
        fit = self.fit(model, lr, cfg.batches, seed, settings=settings)
        if not fit.finite:
            return Outcome(fitness=0.0, status="failed", reason="nan loss", params=params, flops=flops,
                           inherited=inherited, train_seconds=fit.seconds, device=str(self.device))
        start = time.perf_counter()
        val = self.accuracy(model, splits.x_val, splits.y_val)
        test = self.accuracy(model, splits.x_test, splits.y_test) if cfg.evaluate_test else None
        return Outcome(
            fitness=val, val_accuracy=val, test_accuracy=test, final_loss=fit.loss, params=params,
            flops=flops, inherited=inherited, train_seconds=fit.seconds, batches=cfg.batches,
            eval_seconds=time.perf_counter() - start, device=str(self.device), weights=weights_to_bytes(model),
        )

    def fit(self, model: nn.Module, lr: float, batches: int, seed: int,
            loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
            settings: Settings | None = None, on_batches: Callable[[int], None] | None = None) -> Fit:
        """Train ``model`` in place for ``batches`` steps under the configured schedule and augmentation.

        ``settings``: a child's training as its genes make it (``evolve.training.genes``), else the run's.
        ``loss_fn(logits, x, y)`` replaces cross-entropy (distillation: ``evolve.final.finalize``).
        ``on_batches(done)``: told every 50 batches and at the end (progress of a long training)."""
        splits = self.splits
        settings = settings or settings_for(self.config, {})
        cfg = settings.train
        optimizer = make_optimizer(model, settings.optimizer, lr, cfg.momentum, cfg.weight_decay)
        rates = learning_rates(cfg, lr, batches)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        n = splits.x_train.shape[0]
        batch = min(cfg.batch_size, n)
        order = torch.randperm(n, device=self.device, generator=generator)
        cursor = 0
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        loss = torch.zeros((), device=self.device)
        seed_modules(model, torch.Generator(device=self.device).manual_seed(seed ^ _MODULE_STREAM))
        model.train()
        start = time.perf_counter()
        for step in range(batches):
            if cursor + batch > n:
                order = torch.randperm(n, device=self.device, generator=generator)
                cursor = 0
            idx = order[cursor:cursor + batch]
            cursor += batch
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
            x = augment(splits.x_train[idx], cfg.augment, cfg.shift, generator)
            with self._autocast():
                x = self._prepare(x)
                logits = model(x)
                y = splits.y_train[idx]
                loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing) if loss_fn is None \
                    else loss_fn(logits, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            finite &= torch.isfinite(loss.detach())
            if step % 50 == 49:
                if on_batches is not None:
                    on_batches(step + 1)
                if not bool(finite):
                    break
        if self.cuda:
            torch.cuda.synchronize(self.device)
        if on_batches is not None:
            on_batches(batches)
        final = float(loss.detach())
        return Fit(finite=bool(finite) and math.isfinite(final), loss=final, seconds=time.perf_counter() - start)

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
