"""Shared helpers for the benchmarks in bench/: machine description, tables, a moto S3 server.

Kept small on purpose: each benchmark is a script that prints a table; this module only
holds what several of them repeat.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MOTO_KEY = "testing"


# -- describing the run ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' (with uncommitted changes)' if dirty else ''}" if rev else "unknown"


def versions(packages: Sequence[str] = ("torch", "fsspec", "s3fs", "moto", "botocore", "ray")) -> str:
    found = []
    for name in packages:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join([f"python {platform.python_version()}", *found])


def header(script: str, argv: Sequence[str]) -> str:
    """The lines that make a table reproducible: command, machine, date, versions, revision."""
    mem = memory_gib()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [
        f"command: python3 {script} {shlex.join(argv)}".rstrip(),
        f"machine: {os.cpu_count()} cores, {cpu_model()}"
        + (f", {mem:.0f} GiB RAM" if mem else "")
        + f", {platform.system()} {platform.release()}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in load)}" if load else "",
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"versions: {versions()}; evolve at {git_revision()}",
    ]
    return "\n".join(line for line in lines if line)


# -- tables --------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def settings_from(args: Any, cls: type, smoke: dict[str, Any]) -> Any:
    """A script's settings: its defaults, then ``--smoke``'s, then the options given on the command line."""
    given = {k: v for k, v in vars(args).items() if k in cls.__dataclass_fields__}
    return cls(**{**(smoke if args.smoke else {}), **given})


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; values need not be sorted."""
    if not values:
        raise ValueError("percentile of no values")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


# -- S3 through moto -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_s3_app() -> Any:
    """moto's S3 app (what ThreadedMotoServer serves to S3 requests), with conditional PUTs decided
    one at a time, as S3 decides them.

    Without ThreadedMotoServer's per-request guess of which of moto's services a request is for, it
    is the same S3 API at about two thirds of the CPU. moto checks ``If-None-Match: *`` and then
    stores, with nothing between: in a threaded server two racing PUTs of one key can both get 200
    (seen once: `evolve doctor`'s 8-thread race found 2 winners). A lock around conditional PUTs
    gives them S3's atomicity; every other request runs as moto runs it.
    """
    import threading

    from moto.moto_server.werkzeug_app import create_backend_app

    app, lock = create_backend_app("s3"), threading.Lock()

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") == "PUT" and environ.get("HTTP_IF_NONE_MATCH"):
            with lock:
                return list(app(environ, start_response))  # the whole response, stored object and all
        return app(environ, start_response)

    return serve


_MOTO_SERVER = f"""
import logging, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from bench.common import moto_s3_app
from werkzeug.serving import make_server
logging.getLogger("werkzeug").setLevel(logging.ERROR)
make_server("127.0.0.1", int(sys.argv[1]), moto_s3_app(), threaded=True).serve_forever()
"""


def s3_options(endpoint: str) -> dict[str, Any]:
    """storage_options for s3fs against the moto endpoint."""
    return {"client_kwargs": {"endpoint_url": str(endpoint), "region_name": "us-east-1"},
            "key": MOTO_KEY, "secret": MOTO_KEY}


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=MOTO_KEY,
                        aws_secret_access_key=MOTO_KEY)


class Endpoint(str):
    """An endpoint URL that also knows the server's process id (to read its CPU time)."""

    pid: int


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def moto_server(buckets: Sequence[str] = ()) -> Iterator[Endpoint]:
    """A moto S3 server on 127.0.0.1 in its own process (so it does not share our GIL); yields its endpoint.

    The server must honour ``If-None-Match: *`` (create-once) or the benchmark would measure a store
    that does not exist; that is checked before anything else.
    """
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", _MOTO_SERVER, str(port)], stdin=subprocess.DEVNULL)
    endpoint = Endpoint(f"http://127.0.0.1:{port}")
    endpoint.pid = process.pid
    try:
        client = _wait_for_moto(endpoint, process)
        _require_conditional_put(client)
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_moto(endpoint: str, process: subprocess.Popen, timeout: float = 120.0) -> Any:
    client = s3_client(endpoint)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return client
        except Exception as exc:
            if process.poll() is not None:
                raise RuntimeError(f"the moto server at {endpoint} exited (code {process.returncode})") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"the moto server at {endpoint} did not answer in {timeout:.0f} s") from exc
            time.sleep(0.1)


def _require_conditional_put(client: Any) -> None:
    from botocore.exceptions import ClientError

    client.create_bucket(Bucket="evolve-bench-probe")
    client.put_object(Bucket="evolve-bench-probe", Key="k", Body=b"first", IfNoneMatch="*")
    try:
        client.put_object(Bucket="evolve-bench-probe", Key="k", Body=b"second", IfNoneMatch="*")
    except ClientError:
        return
    raise RuntimeError("this moto server ignores If-None-Match: * (moto >= 5.0 is needed for create-once)")


def script_name(path: str) -> str:
    """``bench/overhead.py`` from the script's absolute path (for the printed command line)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


if __name__ == "__main__":
    print(header(script_name(sys.argv[0]), sys.argv[1:]))
