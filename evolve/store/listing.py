"""How a store lists its keys: a recursive walk or one folder locally, ``StartAfter`` pages on S3.

A mixin of :class:`evolve.store.backend.Store` (which provides ``fs``, ``root``, ``local``, ``protocol``,
``read_bytes`` and ``_retrying``): listings are where the engine's cost per step lives on an object
store, so each caller picks the cheapest one that answers its question.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

TMP_PREFIX = ".tmp-"  # local temp files; never listed, never a key


def _check_prefix(prefix: str) -> str:
    if prefix.startswith("/") or ".." in prefix.split("/"):
        raise ValueError(f"invalid key prefix {prefix!r}")
    return prefix



class Listings:
    """Listing methods shared by every backend of a :class:`evolve.store.backend.Store`."""

    fs: Any
    root: str
    local: bool
    protocol: str
    read_bytes: Callable[[str], bytes | None]
    _retrying: Callable[..., Any]

    def list_keys(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with ``prefix`` (``"individuals/"``, ``"adoptions/000000000005-"``), fresh."""
        _check_prefix(prefix)
        folder, _, stem = prefix.rpartition("/")

        def listing() -> list[str]:
            if self.local:
                return self._local_list(folder, prefix)
            fs = self.fs
            base = "/".join(p for p in (self.root, folder) if p)
            fs.invalidate_cache(base)
            if self.protocol in ("s3", "s3a"):
                paths = fs.find(base, prefix=stem)
            else:
                paths = fs.find(base)
            strip = len(self.root) + 1 if self.root else 0
            keys = []
            for path in paths:
                path = path.lstrip("/") if not self.root else path
                if self.root and not path.startswith(self.root + "/"):
                    continue
                key = path[strip:]
                if key.startswith(prefix) and not key.rsplit("/", 1)[-1].startswith(TMP_PREFIX):
                    keys.append(key)
            return keys

        return sorted(set(self._retrying("list", prefix or "", listing)))

    def list_folder(self, folder: str) -> list[str]:
        """Sorted keys directly in ``folder`` ("log/000000003/"), not in its subfolders; fresh.

        Locally one ``os.listdir`` (no stat per name, unlike the recursive walk of ``list_keys``):
        the log's block folders are listed on every refresh."""
        if not folder.endswith("/"):
            raise ValueError(f"list_folder needs a folder like 'log/000000003/', got {folder!r}")
        if not self.local:
            return [k for k in self.list_keys(folder) if "/" not in k[len(folder):]]
        _check_prefix(folder)
        base = os.path.join(self.root, *folder.rstrip("/").split("/"))

        def listing() -> list[str]:
            try:
                names = os.listdir(base)
            except FileNotFoundError:
                return []
            return [folder + n for n in names if not n.startswith(TMP_PREFIX)]

        return sorted(self._retrying("list", folder, listing))

    def list_names(self, folder: str) -> set[str]:
        """The names directly in ``folder`` (``list_folder`` without the folder, unsorted): the cheapest
        listing there is locally, for callers that only look for what is new. Locally it may also
        hold the names of temp files being written (``.tmp-*``: never a key)."""
        if not self.local:
            return {k[len(folder):] for k in Listings.list_folder(self, folder)}
        _check_prefix(folder)
        base = os.path.join(self.root, *folder.rstrip("/").split("/"))

        def listing() -> set[str]:
            try:
                return set(os.listdir(base))
            except FileNotFoundError:
                return set()

        return self._retrying("list", folder, listing)

    def _local_list(self, folder: str, prefix: str) -> list[str]:
        base = os.path.join(self.root, *folder.split("/")) if folder else self.root
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            head = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in files:
                if name.startswith(TMP_PREFIX):
                    continue
                key = head + name
                if key.startswith(prefix):
                    keys.append(key)
        return keys

    def list_keys_after(self, prefix: str, start_after: str) -> list[str]:
        """Sorted keys starting with ``prefix`` that sort after ``start_after``, fresh.

        On S3 the listing starts there (``StartAfter``: one request per 1,000 keys returned),
        so a caller that remembers where it stopped pays only for what is new; other
        backends filter ``list_keys``.
        """
        if self.local or self.protocol not in ("s3", "s3a"):
            return [k for k in Listings.list_keys(self, prefix) if k > start_after]
        return sorted(Listings.list_versions_after(self, prefix, start_after))

    def list_versions_after(self, prefix: str, start_after: str) -> dict[str, str]:
        """As :meth:`list_keys_after`, each key with a token that changes whenever the key is
        replaced (S3: its ETag; local: inode, size and mtime): one listing tells an observer
        which soft records (heartbeats) changed, without reading them. Local stores list the one
        folder that ``prefix`` names, not its subfolders."""
        _check_prefix(prefix)
        if self.local:
            folder, _, _stem = prefix.rpartition("/")
            base = os.path.join(self.root, *folder.split("/")) if folder else self.root

            def scan() -> dict[str, str]:
                out = {}
                try:
                    entries = list(os.scandir(base))
                except FileNotFoundError:
                    return out
                for entry in entries:
                    key = f"{folder}/{entry.name}" if folder else entry.name
                    if entry.name.startswith(TMP_PREFIX) or not key.startswith(prefix) or key <= start_after:
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    if entry.is_file():
                        out[key] = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
                return out

            return self._retrying("list", prefix or "", scan)
        if self.protocol not in ("s3", "s3a"):
            return {k: self._version(k) for k in Listings.list_keys(self, prefix) if k > start_after}

        def listing() -> dict[str, str]:
            fs = self.fs
            bucket, _, base = f"{self.root}/".partition("/")
            kwargs = {"Bucket": bucket, "Prefix": base + prefix, "StartAfter": base + start_after,
                      **getattr(fs, "req_kw", {})}
            out = {}
            while True:
                page = fs.call_s3("list_objects_v2", **kwargs)
                for item in page.get("Contents", []):
                    key = item["Key"][len(base):]
                    if not key.rsplit("/", 1)[-1].startswith(TMP_PREFIX):
                        out[key] = str(item.get("ETag", ""))
                if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                    return out
                kwargs["ContinuationToken"] = page["NextContinuationToken"]

        return self._retrying("list", prefix or "", listing)

    def _version(self, key: str) -> str:
        """A change token for one key on a filesystem whose listing carries none (memory://, GCS)."""
        data = self.read_bytes(key)
        return "" if data is None else hashlib.sha256(data).hexdigest()
