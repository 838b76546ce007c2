"""Object storage: index roots and run folders given as `s3://bucket/prefix`, reached through pyarrow's S3
filesystem (pyarrow comes with lancedb; boto3 is not needed).

Credentials and the endpoint come from the environment, as every AWS tool reads them:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION (or AWS_DEFAULT_REGION) and
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL for an S3-compatible server (MinIO, moto; http:// is allowed).
Without keys the AWS default chain applies (~/.aws, an instance role). Nothing here prints or logs
them, and every error names only the URI, the bucket or the endpoint, each in one line: the bucket is
missing, access is denied, or the endpoint cannot be reached.

Every object write is atomic on S3 (a reader sees the old object or the new one), which is what the
index pointer and the run manifest rely on (engine/index/remote.py, engine/remote_run.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from engine.errors import ConfigError
from engine.files import write_atomic

__all__ = ["Remote", "as_uri", "is_remote", "local_cache", "remote_cache_dir"]

SCHEME = "s3://"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CHUNK = 8 << 20
_DENIED = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "EXPIRED_TOKEN",
           "INVALID_CLIENT_TOKEN_ID", "MISSING_AUTHENTICATION_TOKEN", "REQUEST_EXPIRED", "Forbidden")
_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Could not connect", "Couldn't resolve", "Timeout was reached")


def is_remote(location: str | Path | None) -> bool:
    """Whether `location` is an s3:// URI (a Path made from one, whose '//' folded to '/', counts too)."""
    return location is not None and str(location).startswith("s3:/")


def as_uri(location: str | Path) -> str:
    """`location` as `s3://bucket/prefix`, without a trailing '/'."""
    return SCHEME + str(location)[len("s3:/"):].strip("/")


def remote_cache_dir() -> Path:
    """`SEEDBED_REMOTE_CACHE_DIR`, else `$XDG_CACHE_HOME/seedbed/remote`, else `~/.cache/seedbed/remote`."""
    if os.environ.get("SEEDBED_REMOTE_CACHE_DIR"):
        return Path(os.environ["SEEDBED_REMOTE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seedbed" / "remote"


def local_cache(uri: str, kind: str) -> Path:
    """The local folder that stands for `uri` (`kind`: 'indexes' or 'runs'), keyed by the sha256 of the endpoint
    and the URI (the same s3://bucket/x on two servers is two places)."""
    key = f"{_endpoint_url() or 'aws'} {uri}"
    return remote_cache_dir() / kind / hashlib.sha256(key.encode()).hexdigest()[:16]


class Remote:
    """An s3:// prefix and the filesystem that reaches it; paths given to its methods are relative to the prefix.

    Build one with `Remote.connect`. Every storage failure is raised as a one-line ConfigError
    (a missing object is a return value, not an error).
    """

    def __init__(self, uri: str, filesystem):
        self.uri = uri
        self.bucket, _, self.key = uri[len(SCHEME):].partition("/")
        self._fs = filesystem

    @classmethod
    def connect(cls, location: str | Path, write: bool = False) -> "Remote":
        """Parse `location`, build the filesystem from the environment and check that the bucket answers
        (with `write`, that these credentials may also write and delete there: see `check_writable`).

        Raises:
            ConfigError: a malformed URI or endpoint; a missing bucket; access denied; the endpoint unreachable.
        """
        uri = as_uri(location)
        bucket = uri[len(SCHEME):].partition("/")[0]
        if not _BUCKET_RE.match(bucket):
            raise ConfigError(f"{location} is not an s3:// URI with a bucket name (3-63 lowercase letters, digits, "
                              "'.' or '-'); write e.g. s3://my-bucket/indexes")
        remote = cls(uri, _filesystem())
        remote.check_bucket()
        if write:
            remote.check_writable()
        return remote

    def child(self, *parts: str) -> "Remote":
        return Remote("/".join([self.uri, *parts]), self._fs)

    def uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def check_bucket(self) -> None:
        """Raise ConfigError unless the bucket exists and these credentials may use it."""
        from pyarrow.fs import FileType

        with self._errors():
            info = self._fs.get_file_info(self.bucket)
        if info.type == FileType.NotFound:
            raise ConfigError(f"bucket {self.bucket!r} does not exist (create it, or fix the URI {self.uri})")

    def check_writable(self) -> None:
        """Write and delete a hidden probe object, so credentials that may only read fail before any paid work.

        Raises:
            ConfigError: access denied writing (or any storage failure), in one line.
        """
        probe = self._path(f".seedbed-write-check-{os.getpid()}-{secrets.token_hex(4)}")
        with self._errors(writing=True):
            with self._fs.open_output_stream(probe) as stream:
                stream.write(b"")
            self._fs.delete_file(probe)

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's content, or None when there is none."""
        try:
            with self._errors(), self._fs.open_input_stream(self._path(rel)) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one object (atomic: readers see the old content or this)."""
        with self._errors(), self._fs.open_output_stream(self._path(rel)) as stream:
            stream.write(data)

    def put_file(self, local: Path, rel: str, limit: int | None = None) -> None:
        """Upload a local file (only its first `limit` bytes, if given) as one object, all or nothing.

        pyarrow completes an upload even when it is interrupted (closing the stream commits what was
        written), so the bytes go to a hidden temp object first, moved over `rel` once complete.
        """
        parent, _, name = rel.rpartition("/")
        tmp = "/".join(part for part in (parent, f".{name}.tmp-{os.getpid()}") if part)
        left = local.stat().st_size if limit is None else limit
        try:
            with self._errors(), open(local, "rb") as source, self._fs.open_output_stream(self._path(tmp)) as stream:
                while left > 0:
                    chunk = source.read(min(_CHUNK, left))
                    if not chunk:
                        break
                    stream.write(chunk)
                    left -= len(chunk)
            with self._errors():
                self._fs.move(self._path(tmp), self._path(rel))  # a server-side copy: atomic at `rel`
        except BaseException:
            try:
                self._fs.delete_file(self._path(tmp))
            except OSError:
                pass  # unreachable or never written; a hidden temp object is never read
            raise

    def get_file(self, rel: str, local: Path) -> bool:
        """Download one object to `local` (atomic: engine.files.write_atomic); False if there is none."""
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(local, lambda tmp: self._download(rel, tmp))
            return True
        except FileNotFoundError:
            return False

    def _download(self, rel: str, local: Path) -> None:
        with self._errors(), self._fs.open_input_stream(self._path(rel)) as stream, open(local, "wb") as target:
            shutil.copyfileobj(stream, target, _CHUNK)

    def upload_folder(self, local: Path, rel: str = "") -> None:
        """Copy every file under `local` to `rel/` (in parallel)."""
        from pyarrow.fs import LocalFileSystem, copy_files

        with self._errors():
            copy_files(str(local), self._path(rel), source_filesystem=LocalFileSystem(),
                       destination_filesystem=self._fs, use_threads=True)

    def download_folder(self, rel: str, local: Path) -> None:
        """Copy every object under `rel/` into `local` (in parallel)."""
        from pyarrow.fs import LocalFileSystem, copy_files

        local.mkdir(parents=True, exist_ok=True)
        with self._errors():
            copy_files(self._path(rel), str(local), source_filesystem=self._fs,
                       destination_filesystem=LocalFileSystem(), use_threads=True)

    def list_files(self, rel: str = "") -> dict[str, int]:
        """Every object under `rel/`, as its path relative to `rel` -> size in bytes."""
        from pyarrow.fs import FileSelector, FileType

        base = self._path(rel)
        with self._errors():
            infos = self._fs.get_file_info(FileSelector(base, recursive=True, allow_not_found=True))
        return {info.path[len(base) + 1:]: info.size for info in infos if info.type == FileType.File}

    def list_folders(self, rel: str = "") -> list[str]:
        """The names of the folders right under `rel/`."""
        from pyarrow.fs import FileSelector, FileType

        base = self._path(rel)
        with self._errors():
            infos = self._fs.get_file_info(FileSelector(base, recursive=False, allow_not_found=True))
        return sorted(info.base_name for info in infos if info.type == FileType.Directory)

    def delete(self, rel: str) -> None:
        """Delete one object, or everything under a folder; nothing there is not an error."""
        from pyarrow.fs import FileType

        path = self._path(rel)
        with self._errors():
            kind = self._fs.get_file_info(path).type
            if kind == FileType.File:
                self._fs.delete_file(path)
            elif kind == FileType.Directory:
                self._fs.delete_dir(path)

    def _path(self, rel: str) -> str:
        return "/".join(part for part in (self.bucket, self.key, rel.strip("/")) if part)

    @contextmanager
    def _errors(self, writing: bool = False) -> Iterator[None]:
        """Turn pyarrow's OSErrors into one ConfigError line; a missing object stays a FileNotFoundError."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _error(exc, self.bucket, self.uri, writing) from None


def _error(exc: OSError, bucket: str, uri: str, writing: bool = False) -> ConfigError:
    text = _redact(str(exc))
    if "NO_SUCH_BUCKET" in text:
        return ConfigError(f"bucket {bucket!r} does not exist (create it, or fix the URI {uri})")
    if any(code in text for code in _DENIED):
        keys = f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY{' / AWS_SESSION_TOKEN' if os.environ.get('AWS_SESSION_TOKEN') else ''}"
        if writing:
            return ConfigError(f"access denied writing to {uri}: these credentials may read it but not write and "
                               f"delete objects there (check {keys}, and the bucket's policy)")
        return ConfigError(f"access denied to {uri} (check {keys}, and the bucket's policy)")
    if any(code in text for code in _UNREACHABLE):
        return ConfigError(f"cannot reach the S3 endpoint {_endpoint_shown()} (set AWS_ENDPOINT_URL, or check the server)")
    return ConfigError(f"S3 request for {uri} failed: {text.splitlines()[0] if text else type(exc).__name__}")


def _redact(text: str) -> str:
    """`text` with any credential from the environment masked (an error message must never carry one)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _endpoint_variable() -> str:
    return "AWS_ENDPOINT_URL_S3" if os.environ.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"


def _endpoint_url() -> str | None:
    return os.environ.get(_endpoint_variable()) or None


def _endpoint_shown() -> str:
    """The endpoint as safe to print (`_filesystem` refuses one holding credentials)."""
    return _endpoint_url() or "of AWS (no AWS_ENDPOINT_URL set)"


def _filesystem():
    """An S3FileSystem configured from the environment (see the module docstring)."""
    try:
        from pyarrow import fs
    except ImportError:  # pragma: no cover - lancedb brings pyarrow
        raise ConfigError("s3:// locations need pyarrow: pip install pyarrow") from None
    if not hasattr(fs, "S3FileSystem"):  # pragma: no cover - a pyarrow built without S3
        raise ConfigError("this pyarrow has no S3 support; install the PyPI wheel: pip install --force-reinstall pyarrow")
    env = os.environ
    options = {"connect_timeout": 5.0, "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3)}
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):
        missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
        raise ConfigError(f"{missing} is not set but its partner is; set both, or neither to use ~/.aws or an instance role")
    if key:
        options.update(access_key=key, secret_key=secret, session_token=env.get("AWS_SESSION_TOKEN") or None)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    url = _endpoint_url()
    if url:
        if "@" in url:  # user info: a secret may hold any character, so the URL is never printed
            raise ConfigError(f"{_endpoint_variable()} holds credentials ('@'); put credentials in "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, not in AWS_ENDPOINT_URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{_endpoint_variable()} {url!r} is not an http(s) URL; write e.g. http://127.0.0.1:9000")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme)
        region = region or "us-east-1"  # S3-compatible servers ignore it; without one the SDK asks AWS
    if region:
        options["region"] = region
    return fs.S3FileSystem(**options)
