"""`evolve tensorboard`, `plot`, `export`: the views of a run."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from evolve.cli.console import (
    StorageOptions,
    app,
    err,
    fail,
    guard,
    open_store,
    out,
    views_guard,
    warn_unreadable,
)
from evolve.views.lineage import plot as plot_run
from evolve.views.live import serve as serve_views
from evolve.views.parquet import export_parquet
from evolve.views.tensorboard import sync


@app.command()
@guard
@views_guard
def tensorboard(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    storage_options_: StorageOptions = None,
    logdir: Annotated[Optional[str], typer.Option(help="TensorBoard logdir (default: ./tb-<store name>).")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Start TensorBoard and keep the logdir in sync until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TensorBoard's port with --serve (0: any free one).")] = 6006,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between syncs with --serve.")] = 5.0,
    individuals: Annotated[bool, typer.Option(
        "--individuals", help="Also one HParams run per individual (thousands of runs in every dashboard's list; "
                              "off: population, lineage and the best's runs alone).")] = False,
    model_graph: Annotated[bool, typer.Option(help="The best's torch module in the Graphs dashboard.")] = True,
) -> None:
    """Write TensorBoard views of a run (population scalars, lineage, Figure 1, the best), incrementally; --serve shows them."""
    import os

    st = open_store(store, storage_options_)
    if logdir is None:
        logdir = os.path.join(os.getcwd(), "tb-" + (st.url.rstrip("/").rsplit("/", 1)[-1] or "run"))
    options = {"individuals": individuals, "model_graph": model_graph}

    def show(report) -> None:
        err.print(f"{report.logdir}: {report.line()}", highlight=False)
        warn_unreadable(report.unreadable)
        for line in report.errors:
            err.print(f"[yellow]warning:[/] {line}", highlight=False)

    if not serve:
        show(sync(st, logdir, **options))
        return
    if port == 0:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    err.print(f"serving {logdir} at http://127.0.0.1:{port}/ (syncing every {interval:g}s; Ctrl-C to stop)",
              highlight=False)
    code = serve_views(st, logdir, port=port, interval=interval, on_sync=show, **options)
    if code:
        fail(f"tensorboard exited with code {code}")


@app.command()
@guard
@views_guard
def plot(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    out_png: Annotated[str, typer.Argument(metavar="OUT.png", help="Where to write the picture.")],
    storage_options_: StorageOptions = None,
    width: Annotated[float, typer.Option(min=2, help="Inches.")] = 10.0,
    height: Annotated[float, typer.Option(min=2, help="Inches.")] = 6.0,
    dpi: Annotated[int, typer.Option(min=30, max=600)] = 150,
) -> None:
    """Figure 1 of Real et al.: every individual's fitness over time, the best's line of descent."""
    report = plot_run(open_store(store, storage_options_), out_png, size=(width, height), dpi=dpi)
    warn_unreadable(report.unreadable)
    out.print(f"wrote {report.path} ({report.width}x{report.height}): {report.individuals} individuals, "
              f"{report.alive} alive, best {report.best_step}", highlight=False)


@app.command("export")
@guard
@views_guard
def export_(
    store: Annotated[str, typer.Argument(help="Store URL of the run.")],
    out_parquet: Annotated[str, typer.Argument(metavar="OUT.parquet", help="Where to write the table.")],
    storage_options_: StorageOptions = None,
) -> None:
    """Every individual as a row of a Parquet file (pandas, pyarrow, DuckDB, polars read it as is)."""

    report = export_parquet(open_store(store, storage_options_), out_parquet)
    warn_unreadable(report.unreadable)
    out.print(f"wrote {report.path}: {report.rows} individuals ({report.alive} alive), {report.bytes:,} bytes",
              highlight=False)
