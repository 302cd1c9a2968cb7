"""Sources in object stores and other fsspec file systems: ``s3://``, ``gs://``, ``hdfs://``, ``memory://``, ...

Credentials come from where each file system's own client looks: for S3 the AWS variables
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``) and ``~/.aws/config`` and
``credentials`` (through s3fs and botocore); for GCS gcsfs's (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's);
for HDFS pyarrow's. A file system object is made fresh for each declaration (``skip_instance_cache``), so
credentials set after a failed try are seen. Every failure is one line: missing credentials, a bucket or key
that does not exist, access denied, a client library not installed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import InvalidInput, NotFound

_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>.*)$")
CLIENTS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "hdfs": "pyarrow",
    "az": "adlfs",
    "abfs": "adlfs",
}
NO_CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`",
}


def is_url(source: str) -> bool:
    """True for ``scheme://...`` (anything fsspec opens, ``file://`` included)."""
    return _URL.match(source.split("::")[-1]) is not None


def scheme(url: str) -> str:
    m = _URL.match(url.split("::")[-1])
    return m["scheme"] if m else "file"


def filesystem(url: str) -> tuple[Any, str]:
    """``(fs, path)`` for ``url`` with a fresh file system object; a missing client library is one line."""
    import fsspec

    s = scheme(url)
    with errors(url):
        try:
            return fsspec.core.url_to_fs(url, skip_instance_cache=True)
        except ImportError:
            package = CLIENTS.get(s, f"the fsspec implementation of {s}://")
            raise InvalidInput(f"reading {s}:// needs {package}: pip install {package}") from None
        except ValueError as exc:
            if "protocol" in str(exc).lower():
                raise InvalidInput(f"{s}:// is no file system fsspec knows; check the URL {url!r}") from None
            raise


def read_bytes(url: str) -> bytes:
    """The whole object at ``url``."""
    fs, path = filesystem(url)
    with errors(url):
        return fs.cat_file(path)


class RemoteFile:
    """One object found by :func:`glob`, read through the file system that found it (one client for all)."""

    def __init__(self, fs: Any, path: str, url: str):
        self.fs, self.path, self.url = fs, path, url

    def read_bytes(self) -> bytes:
        with errors(self.url):
            return self.fs.cat_file(self.path)

    def open_text(self) -> Any:
        """A text (UTF-8, strict) file object."""
        with errors(self.url):
            return self.fs.open(self.path, "rt", encoding="utf-8", errors="strict")

    def __str__(self) -> str:
        return self.url


def glob(pattern: str) -> list[RemoteFile]:
    """The files matching ``pattern`` (a URL with ``*``/``**``, or one object), sorted by URL."""
    fs, path = filesystem(pattern)
    with errors(pattern):
        if any(c in path for c in "*?["):
            found = fs.glob(path, detail=True)
        else:
            found = {path: fs.info(path)} if fs.exists(path) else {}
    files = sorted(p for p, info in found.items() if info.get("type") == "file")
    return [RemoteFile(fs, p, fs.unstrip_protocol(p)) for p in files]


def open_text(url: str) -> Any:
    """A text (UTF-8, strict) file object for ``url``."""
    fs, path = filesystem(url)
    return RemoteFile(fs, path, url).open_text()


def zarr_store(url: str) -> Any:
    """A read-only zarr store over ``url`` (read in place, chunk by chunk), with a fresh file system."""
    from zarr.storage import FsspecStore

    s = scheme(url)
    with errors(url):
        try:
            return FsspecStore.from_url(url, storage_options={"skip_instance_cache": True}, read_only=True)
        except ImportError:
            package = CLIENTS.get(s, f"the fsspec implementation of {s}://")
            raise InvalidInput(f"reading {s}:// needs {package}: pip install {package}") from None


def mapper(url: str) -> Any:
    """A key -> bytes mapping over ``url`` (for reading raw metadata before zarr parses it)."""
    fs, path = filesystem(url)
    return fs.get_mapper(path)


@contextmanager
def errors(url: str) -> Iterator[None]:
    """Turn what a remote file system raises into one line that says what to do."""
    s = scheme(url)
    try:
        yield
    except (InvalidInput, NotFound):
        raise
    except FileNotFoundError as exc:
        text = str(exc)
        if "bucket" in text.lower():
            bucket = _URL.match(url)["rest"].split("/")[0] if _URL.match(url) else url
            raise NotFound(f"bucket {bucket!r} does not exist ({url}); check the bucket name and region") from None
        raise NotFound(f"{url!r} not found; check the URL") from None
    except PermissionError:
        raise InvalidInput(f"access to {url} was denied; check that the credentials may read it") from None
    except Exception as exc:
        name = type(exc).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError") or (
            "credentials" in str(exc).lower() and name != "InvalidInput"
        ):
            hint = NO_CREDENTIALS.get(s, "give the file system's usual credentials")
            raise InvalidInput(f"no credentials to read {url}: {hint}") from None
        if isinstance(exc, (OSError, ValueError, RuntimeError)) or "botocore" in type(exc).__module__:
            first = (str(exc).strip().splitlines() or [name])[0][:160]
            raise InvalidInput(f"cannot read {url}: {name}: {first}") from None
        raise


__all__ = [
    "is_url",
    "scheme",
    "filesystem",
    "read_bytes",
    "glob",
    "open_text",
    "RemoteFile",
    "zarr_store",
    "mapper",
    "errors",
]
