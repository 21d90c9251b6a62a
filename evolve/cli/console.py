"""What every `evolve` command shares: the Typer app, its consoles, one-line errors, progress, the run summary."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from evolve.config import ConfigError, is_table, load_config_file
from evolve.final.final_model import describe_final
from evolve.runner.launch import USER_ERRORS
from evolve.runner.logsetup import configure, unconfigure
from evolve.runner.stopping import Interrupted, received
from evolve.store.backend import Store, StoreError
from evolve.store.repair import refusal
from evolve.views.parquet import ExportError
from evolve.views.tensorboard import ViewError
from genomes import genome_from_json


def _tidy_help(group: Any) -> None:
    """Help as a user expects it: a flag shows no value (typer 0.29 writes ``--dry-run <bool>``), and an
    argument reads in capitals, ``STORE``, in the usage line too (it writes ``{store}``)."""
    for command in [group, *getattr(group, "commands", {}).values()]:
        if command is not group and hasattr(command, "commands"):
            _tidy_help(command)
        if not getattr(command, "_tidy", False) and hasattr(command, "get_help_option"):
            command._tidy = True
            command.get_help_option = _flag_help(command.get_help_option)
        for param in getattr(command, "params", []):
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            elif getattr(param, "param_type_name", "") == "argument":
                if param.metavar is None:
                    param.metavar = param.name.upper()
                shown = param.metavar + ("..." if param.nargs != 1 else "")
                param._usage_display_name = (lambda shown=shown, required=param.required:
                                             shown if required else f"[{shown}]")


def _flag_help(get: Any) -> Any:
    def get_help_option(ctx: Any) -> Any:
        option = get(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    return get_help_option


ABORTS = tuple({getattr(sys.modules[typer.BadParameter.__module__], "Abort", typer.Abort), typer.Abort})
"""click's Abort, and typer's own where typer carries its own click (0.29)."""


class OneLineErrors(typer.core.TyperGroup):
    """A bad option or argument (a choice not offered, a missing store) gets one line, as every other
    bad value does, not Typer's usage box: ``error: Invalid value for '--selection': ... (evolve run --help)``."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        click = sys.modules[typer.BadParameter.__module__]  # click's exceptions (typer 0.29 carries its own click)
        _tidy_help(self)

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help, already shown
                sys.exit(exc.exit_code)
            where = f" ({exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            message = exc.format_message().replace("Value error, ", "").rstrip(".")
            err.print(f"[bold red]error:[/] {escape(message)}{escape(where)}", highlight=False)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            err.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False)
            sys.exit(exc.exit_code)
        except ABORTS:
            err.print("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, help="Evolve neural architectures.")
genome_app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, help="Inspect the genomes that evolve.")
app.add_typer(genome_app, name="genome")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("evolve")
        except PackageNotFoundError:  # run from a checkout that is not installed
            number = "unknown (not installed)"
        typer.echo(f"evolve {number}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="Print evolve's version and exit.")] = False) -> None:
    """Evolve neural architectures."""

# soft_wrap: a message stays one line however narrow the terminal (or a pipe's 80 columns)
out = Console(soft_wrap=True)


err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, non-zero exit, no traceback."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def warn_unreadable(unreadable) -> None:
    """One warning line per record a view skipped because it does not parse (`evolve check` reports them)."""
    for key, reason in unreadable:
        err.print(f"[yellow]warning:[/] skipped unreadable record {key}: {reason}", highlight=False)


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(part) for part in text.lower().replace("x", ",").split(","))
    except ValueError:
        fail(f"--input-shape: expected C,H,W (e.g. 3,32,32), got {text!r}")
    return c, h, w


STORAGE_OPTIONS_HELP = ("fsspec options for the store (endpoint_url, key, secret, token, ...): JSON, or a "
                        "JSON, TOML or YAML file. Never written into the store.")
StorageOptions = Annotated[Optional[str], typer.Option("--storage-options", help=STORAGE_OPTIONS_HELP)]
JSON_HELP = "Print one JSON object instead (its shape: README, 'Scripting'; 'format' is its version)."
AsJson = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
JSON_FORMAT = 1  # the version of every --json shape; a change that breaks a reader raises it


def storage_options(text: str | None) -> dict[str, Any]:
    """``--storage-options``: a JSON object, or a file holding one (JSON, TOML or YAML)."""

    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--storage-options: not a JSON object ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError("--storage-options: expected a JSON object")
        return data
    try:
        return load_config_file(text)
    except ConfigError as exc:
        raise ConfigError(f"--storage-options: {exc}") from None


def settings_from(pairs: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as nested settings: ``train.batches=300`` is ``{"train": {"batches": 300}}``;
    values read as YAML scalars (numbers, true/false, null, [lists]), else as strings."""
    import yaml


    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise ConfigError(f"--set: expected KEY=VALUE (dotted keys for nested fields), got {pair!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set: {key!r} sets a field inside {part!r}, which is also set to a value")
        node[path[-1]] = value
    return out


def print_json(command: str, data: dict[str, Any]) -> None:
    """One JSON object on stdout: ``{"format": 1, "command": ..., ...}`` (NaN and infinities as null)."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    sys.stdout.write(json.dumps({"format": JSON_FORMAT, "command": command, **clean(data)}, indent=1) + "\n")


def open_store(url: str, options: str | dict | None = None):
    """The store of an existing run; ``options``: ``--storage-options`` as given, or a dict."""

    return Store.open(url, options if isinstance(options, dict) else storage_options(options), create=False)


def guard(fn):
    """Turn the engine's expected errors into one red line and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):

        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(str(exc))
        except Interrupted as exc:  # a run or resume, stopped by Ctrl-C, SIGTERM or SIGHUP
            _say(exc.line())
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _say("interrupted: what was recorded stays; the same command continues from there")
            raise typer.Exit(128 + received()) from None

    return wrapper


def _say(line: str) -> None:
    """The last line of a stopped run; a terminal closed under it (SIGHUP) takes the line, not the exit code."""
    with contextlib.suppress(OSError):
        err.print(line, highlight=False)


def views_guard(fn):
    """guard, plus the views' own one-line errors (a logdir of another run, an unwritable file)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):

        try:
            return fn(*args, **kwargs)
        except (ViewError, ExportError) as exc:
            fail(str(exc))

    return wrapper


class Eta:
    """Time left, from the rate over the recent half of the elapsed time (at least ``least`` seconds).

    The mean rate since the start promises too little: a run's first steps are its cheapest (the initial
    population, small networks) and children grow towards the bounds, so each step costs more than the
    last. On the default demo the mean rate said 21-24% too little at half-way, the recent rate 7-12%;
    30 s in, either said about 4 minutes of a run that took 10-11. So nothing is said before the recent
    rate can be compared with the older one (``2 * least`` seconds), and where the recent rate is the
    lower, the run is slowing down and the estimate reads "at least".
    """

    def __init__(self, total: int, least: float = 30.0, started: float | None = None) -> None:
        self.total, self.least = total, least
        self.started = started
        self.first = 0
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def __call__(self, done: int, now: float | None = None) -> str:
        """", about 3m10s left" (or ", at least ..."), or "" before a rate can be told."""
        now = time.monotonic() if now is None else now
        if not self.samples:
            self.started = now if self.started is None else self.started
            self.first = done
        if not self.samples or done != self.samples[-1][1]:
            self.samples.append((now, done))
        elapsed = now - self.started
        cutoff = now - max(self.least, elapsed / 2)
        while len(self.samples) > 1 and self.samples[1][0] <= cutoff and self.samples[1][1] < done:
            self.samples.popleft()  # keeps a sample below ``done``: a stall lowers the rate, never hides it
        since, then = (self.started, self.first) if self.samples[0][0] > cutoff else self.samples[0]
        if done >= self.total or elapsed < 2 * self.least or now <= since or done <= then:
            return ""
        recent = (done - then) / (now - since)
        mean = (done - self.first) / elapsed
        word = "at least" if recent < 0.95 * mean else "about"
        return f", {word} {_duration((self.total - done) / recent)} left"


class LogProgress:
    """Progress for a log file or a pipe: one plain line every ``every`` seconds and at the end.

    rich draws its bar only on a terminal; without one a long cluster run would stay silent.
    """

    def __init__(self, total: int, every: float = 30.0, label: str = "evolving", unit: str = "individuals") -> None:
        self.total, self.every, self.label, self.unit = total, every, label, unit
        self.started = self.last = time.monotonic()
        self.eta = Eta(total, started=self.started)

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        eta = self.eta(done, now)
        if not force and now - self.last < self.every:
            return
        self.last = now
        err.print(f"{self.label}: {done:,}/{self.total:,} {self.unit} ({100 * done / max(self.total, 1):.0f}%), "
                  f"{_duration(now - self.started)} elapsed{eta}", highlight=False)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextlib.contextmanager
def log_to(level: str, file: str | None):
    """The engine's (and the workers') log lines on stderr and, with ``file``, in it; undone on exit."""

    try:
        handlers = configure(level, file)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"--log-file: cannot write {file!r}: {exc.strerror or exc}")
    try:
        yield
    finally:
        unconfigure(handlers)


LOG_LEVEL_HELP = "Log lines shown (the workers' too): debug, info, warning or error."


LOG_FILE_HELP = "Also append the log lines (the workers' too) to this file."


GRACE_HELP = ("Stopped by Ctrl-C, SIGTERM or SIGHUP: seconds a step in flight may take to finish; those still "
              "training then are given up, for `evolve resume` to adopt at once.")


class RunProgress:
    """The run's progress on stderr: a bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce  # say what the store runs first (a new run; a resume's user knows)
        self.stack = contextlib.ExitStack()
        self.show: Any = None
        self.total = 0
        self._started = time.monotonic()
        self.seconds: float | None = None  # the search's wall time, once it ended

    def __enter__(self) -> RunProgress:
        return self

    def start(self, run: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        config = run.config
        if self.announce:
            err.print(f"store {run.url}: {config.genome} genomes, {config.selection} selection, population "
                      f"{config.population}, {config.steps} steps, {config.workers} workers, "
                      + (f"dataset {config.dataset}" if config.fitness == "train" else f"fitness {config.fitness}"))
        for other in run.others[:1]:
            err.print(f"another driver is running {run.url} ({other.line()}): this one joins it as "
                      f"{config.workers} more worker{'s' if config.workers > 1 else ''} (steps and the stages after "
                      "the search are claimed, so none is done twice)", highlight=False)
        self.total = run.total
        if err.is_terminal:
            bar = self.stack.enter_context(Progress(TextColumn("[bold]evolving"), BarColumn(), MofNCompleteColumn(),
                                                    TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                                                    console=err, transient=False))
            task = bar.add_task("steps", total=self.total, left="")
            eta = Eta(self.total)
            self.show = lambda done, force=False: bar.update(task, completed=done, left=eta(done).lstrip(", "))
        else:
            self.show = LogProgress(self.total).update

    def update(self, done: int) -> None:
        if self.show is not None:
            self.show(min(done, self.total))

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is None and self.show is not None:
            self.show(self.total, force=True)
        self.stack.close()
        self.seconds = time.monotonic() - self.started

    @property
    def started(self) -> float:
        return self._started


class StageProgress:
    """Each training after the search as it goes: a bar on a terminal (batches, rate, time left), else a
    plain line every 30 s and at the end (``Run.result``'s ``on_stage``)."""

    def __call__(self, what: str, batches: int) -> Callable[[int], None]:
        if not err.is_terminal:
            err.print(f"{what}: {batches:,} batches ...", highlight=False)
            plain, ended = LogProgress(batches, label=what, unit="batches"), []

            def update_plain(done: int) -> None:
                if not ended:
                    plain.update(done, force=done >= batches)
                    if done >= batches:
                        ended.append(done)

            return update_plain
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(TextColumn(f"[bold]{escape(what)}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False)
        task = bar.add_task(what, total=batches)
        bar.start()

        def update(done: int) -> None:
            bar.update(task, completed=done)
            if done >= batches and bar.live.is_started:
                bar.stop()

        return update


def print_summary(run: Any, search_seconds: float | None = None) -> None:

    if run.views is not None:
        err.print(f"tensorboard: {run.views.line()}", highlight=False)
    config = run.config
    info = run.status()  # reads every record, and keeps those it could not in run.unreadable
    if run.unreadable:  # damaged during the run: nothing after it can be trusted
        raise StoreError(refusal(run.url, run.unreadable))
    out.print(f"run at {run.url}: {info['done']}/{info['total']} individuals, {info['live']} live, "
              f"{info['failed']} failed")
    if info["done"] < info["total"]:
        return
    if config.fitness == "train":
        start = "its architecture from scratch" if config.final_from == "scratch" else "it from its weights"
        further = (f", training {start} {config.final_batches:,} batches on {config.final_data}"
                   if config.final_batches else "")
        reference = " and LeNet-5 on the same split for reference" if config.reference else ""
        err.print(f"testing the best{further}{reference} ...", highlight=False)
    after = time.monotonic()
    result = run.result(reference=config.reference, on_wait=lambda line: err.print(line, highlight=False),
                        on_stage=StageProgress())
    if result is None:
        return
    took = f" (the search: {_duration(search_seconds)})" if search_seconds else ""
    after_line = f"after the search: {_duration(time.monotonic() - after)}{took}"
    flops = f", {result['flops'] / 1e6:.2f} MFLOPs" if result.get("flops") else ""
    if is_table(config.fitness):  # looked up, never trained: the table's figure is the result
        out.print(f"best individual {result['step']}: {result['fitness']:g} in {config.fitness}, "
                  f"{result['params'] or 0:,} parameters{flops}", highlight=False)
        out.print(genome_from_json_line(result["genome"]), highlight=False)
        out.print(f"the run looked up {result['individuals']} individuals", highlight=False)
        err.print(after_line, highlight=False)
        return
    out.print(f"best individual {result['step']}: validation {pct(result['val_accuracy'])}, "
              f"test {pct(result['test_accuracy'])}, {result['params'] or 0:,} parameters{flops}", highlight=False)
    out.print(genome_from_json_line(result["genome"]), highlight=False)
    final = result.get("final")
    if final and final.get("status") == "failed":
        out.print(f"final training of the best failed ({final.get('reason')}); the best as found stands")
        final = None
    if final:
        out.print(f"{describe_final(final)}; {final['train_seconds']:.0f} s", highlight=False)
    before = " before the final training" if final and final.get("from", "weights") == "weights" else ""
    out.print(f"initial population's best validation {pct(result['initial_best_val'])}; the best's lineage "
              f"trained {result['lineage_batches']:,} batches{before}; "
              "the run spent "
              f"{result['compute_seconds'] / 60:.1f} worker-minutes (core or GPU) on {result['individuals']} "
              "individuals", highlight=False)
    lenet = result.get("lenet5")
    if lenet:
        out.print(f"reference: LeNet-5 (batch norm, one-cycle SGD, shifts; {lenet['batches']:,} batches, "
                  f"{lenet['train_seconds']:.0f} s) on the same split: validation {pct(lenet['val_accuracy'])}, "
                  f"test {pct(lenet['test_accuracy'])}, {lenet['params']:,} parameters", highlight=False)
    err.print(after_line, highlight=False)


def genome_from_json_line(data: dict) -> str:

    return genome_from_json(data).describe()


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
