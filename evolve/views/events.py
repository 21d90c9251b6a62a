"""TensorBoard's event files as ``evolve.views.tensorboard`` writes them: whole or not at all.

A file is written under a temporary name and renamed into place (``EventFile``); values are built
from TensorBoard's protobufs (scalars, text, PNG images); one writer per logdir holds its lock. What the
files show is ``evolve.views.tensorboard``'s business; nothing here knows a run.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from evolve.views.lineage import TMP_PREFIX, png_size

LOCK_FILE = ".evolve-tb.lock"


class EventFile:
    """An event file written under a temporary name and renamed into place on success."""

    def __init__(self, folder: str, name: str, wall_time: float | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, name)
        self.tmp = os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        self._fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._writer = RecordWriter(self._fh)
        self.add(Event(wall_time=time.time() if wall_time is None else wall_time, file_version="brain.Event:2"))

    def add(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())

    def add_bytes(self, event: bytes) -> None:
        self._writer.write(event)

    def commit(self, durable: bool = True) -> None:
        self._fh.flush()
        if durable:
            os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def event_file(folder: str, name: str, wall_time: float | None = None, durable: bool = True) -> Iterator[EventFile]:
    """``durable=False`` skips the fsync: for the thousands of tiny per-individual files, where a power
    cut costs at most a re-sync (a process crash is covered by the rename alone)."""
    f = EventFile(folder, name, wall_time)
    try:
        yield f
    except BaseException:
        f.abort()
        raise
    f.commit(durable)


def scalar_summary(values: dict[str, float]) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])


def text_value(tag: str, text: str) -> Any:
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.text import metadata as text_metadata

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
    return Summary.Value(tag=tag, metadata=text_metadata.create_summary_metadata(None, None), tensor=tensor)


def image_value(tag: str, png: bytes) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary

    width, height = png_size(png)
    return Summary.Value(tag=tag, image=Summary.Image(height=height, width=width, colorspace=4,
                                                       encoded_image_string=png))


def files_matching(folder: str, pattern: re.Pattern[str]) -> list[tuple[str, re.Match[str]]]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(((name, m) for name in names if (m := pattern.fullmatch(name))), key=lambda p: p[0])


def replace_older(folder: str, pattern: re.Pattern[str], keep: str) -> None:
    for name, _ in files_matching(folder, pattern):
        if name != keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))


@contextlib.contextmanager
def locked(logdir: str) -> Iterator[None]:
    """One syncer per logdir at a time (a live run and `evolve tensorboard --serve` may share one)."""
    import fcntl

    with open(os.path.join(logdir, LOCK_FILE), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
