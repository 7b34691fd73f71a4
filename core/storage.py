"""Where offline data lives: the data dir (``RTML_DATA_DIR``) as a pyarrow filesystem + path, local or S3.

Every read or write of offline data goes through a :class:`Location` (``data_root() / "transactions"``),
so the same code works on a local folder and on ``s3://bucket/prefix`` (endpoint and credentials from
``settings().s3``).

Writes are atomic per object: a local file is written under a hidden temporary name and renamed; an S3
object becomes visible only when its upload completes (object stores have no rename). Writers that need
exactly-once output use deterministic object names (one name per batch / bucket): a replay overwrites
its own objects instead of adding new ones.

DuckDB cannot read ``s3://`` here: its S3 support (the httpfs extension) is not an installed package
for DuckDB 2.0.1 and nothing may download extensions at run time. :func:`register_duckdb` routes DuckDB
reads through pyarrow's S3 filesystem instead: an fsspec wrapper (``ArrowFSWrapper``) around
``pyarrow.fs.S3FileSystem``, registered with ``connection.register_filesystem``, answers ``s3://`` and
``s3arrow://`` paths; extension auto-install and auto-load are switched off. Feast's duckdb store (ibis)
would load httpfs for ``s3://`` paths, so its sources name objects ``s3arrow://bucket/key`` (same
objects, pyarrow route; see :func:`Location.feast_uri`).
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from core.settings import settings

S3_SCHEMES = ("s3://", "s3a://", "s3arrow://")
ARROW_PROTOCOL = "s3arrow"  # DuckDB/ibis paths read through pyarrow's S3 filesystem
_IGNORED_PREFIXES = (".", "_")  # hidden and temporary names, markers such as _SUCCESS


@dataclass(frozen=True)
class Location:
    """A file or folder on ``fs`` at ``path`` (``bucket/key`` on S3, an absolute path locally)."""

    fs: pafs.FileSystem
    path: str
    s3: bool = False

    def __truediv__(self, part: str) -> Location:
        return self.join(part)

    def join(self, *parts: str) -> Location:
        path = "/".join([self.path.rstrip("/"), *(str(p).strip("/") for p in parts)])
        return Location(self.fs, path, self.s3)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.fs, self.path.rstrip("/").rsplit("/", 1)[0], self.s3)

    @property
    def uri(self) -> str:
        """``s3://bucket/key`` or the local path (what settings and manifests show)."""
        return f"s3://{self.path}" if self.s3 else self.path

    @property
    def spark_uri(self) -> str:
        """The same data for Spark: ``s3a://bucket/key`` (hadoop-aws) or the local path."""
        return f"s3a://{self.path}" if self.s3 else self.path

    @property
    def feast_uri(self) -> str:
        """The path to put in a Feast source: ``s3arrow://`` for the duckdb store, ``s3a://`` for Spark."""
        if not self.s3:
            return self.path
        return self.spark_uri if settings().offline_store == "spark" else f"{ARROW_PROTOCOL}://{self.path}"

    def __str__(self) -> str:
        return self.uri

    def local_path(self) -> Path:
        if self.s3:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.path)

    # --- queries -------------------------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound or self.is_dir()

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        kind = self.info().type
        if kind == pafs.FileType.Directory:
            return True
        if not self.s3:
            return False
        try:  # S3 has no folders: a prefix with objects under it is one
            return bool(self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)))
        except (NotADirectoryError, FileNotFoundError):
            return False

    def files(self, suffix: str = ".parquet") -> list[str]:
        """Paths of the data files under this folder (recursive, sorted; hidden/temporary names skipped), or
        ``[path]`` for a file. One listing request on S3."""
        return [i.path for i in self.file_infos(suffix)]

    def file_infos(self, suffix: str = ".parquet") -> list[pafs.FileInfo]:
        """:meth:`files` with their sizes (from the same listing: no request per file on S3)."""
        if self.path.endswith(suffix):  # most likely a file: one HEAD on S3, no listing
            info = self.info()
            if info.type == pafs.FileType.File:
                return [info]
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        except NotADirectoryError:
            infos = []
        if not infos:
            info = self.info()
            return [info] if info.type == pafs.FileType.File else []
        root = self.path.rstrip("/") + "/"
        out = []
        for i in infos:
            rel = i.path[len(root):] if i.path.startswith(root) else i.base_name
            if i.type == pafs.FileType.File and i.path.endswith(suffix) and not any(
                part.startswith(_IGNORED_PREFIXES) for part in rel.split("/")
            ):
                out.append(i)
        return sorted(out, key=lambda i: i.path)

    def glob(self, prefix: str, suffix: str = ".parquet") -> list[Location]:
        """Files directly in this folder whose names start with ``prefix`` and end with ``suffix``."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return [Location(self.fs, i.path, self.s3) for i in sorted(infos, key=lambda i: i.path)
                if i.type == pafs.FileType.File and i.base_name.startswith(prefix) and i.base_name.endswith(suffix)
                and not i.base_name.startswith(_IGNORED_PREFIXES)]

    # --- reads ---------------------------------------------------------------------------------------
    def dataset(self):
        """A pyarrow dataset over this file or every data file under this folder."""
        import pyarrow.dataset as pds

        files = self.files()
        if not files:
            raise FileNotFoundError(f"no Parquet data at {self.uri}")
        # pre_buffer: each row group's column chunks are read in coalesced requests before decoding, as
        # pq.read_table does (about half the CPU of the dataset default on a 6M-row, 16-column source; and
        # fewer requests on S3)
        fmt = pds.ParquetFileFormat(default_fragment_scan_options=pds.ParquetFragmentScanOptions(pre_buffer=True))
        return pds.dataset(files, filesystem=self.fs, format=fmt)

    def read_table(self, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        """This file, or every data file under this folder (in name order), as one table."""
        files = self.files()
        if len(files) == 1 and filter is None:
            import pyarrow.parquet as pq

            return pq.read_table(files[0], columns=columns, filesystem=self.fs)
        return self.dataset().to_table(columns=columns, filter=filter)

    def read_pandas(self, columns: list[str] | None = None):
        return self.read_table(columns).to_pandas()

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    # --- writes (atomic per object) ------------------------------------------------------------------
    def mkdir(self) -> None:
        if not self.s3:
            self.fs.create_dir(self.path, recursive=True)

    def write_bytes(self, data: bytes) -> None:
        self._atomic(lambda target: _put(self.fs, target, data))

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_table(self, table: pa.Table, **parquet_options: Any) -> None:
        """``table`` as one Parquet object/file, visible only once complete."""
        import pyarrow.parquet as pq

        self._atomic(lambda target: pq.write_table(table, target, filesystem=self.fs, **parquet_options))

    def write_pandas(self, df, **parquet_options: Any) -> None:
        self.write_table(pa.Table.from_pandas(df, preserve_index=False), **parquet_options)

    def delete(self) -> None:
        """Remove this file/object (or folder and everything under it); missing is fine."""
        kind = self.info().type
        if kind == pafs.FileType.File:
            self.fs.delete_file(self.path)
        elif self.is_dir():
            self.fs.delete_dir(self.path)

    def upload_dir(self, local: Path) -> None:
        """Copy every file under the local folder ``local`` to this folder (same relative names)."""
        for path in sorted(Path(local).rglob("*")):
            if path.is_file():
                self.join(*path.relative_to(local).parts).write_bytes(path.read_bytes())

    def _atomic(self, write) -> None:
        if self.s3:
            write(self.path)  # an S3 object appears only when its upload completes
            return
        self.parent.mkdir()
        tmp = f"{self.parent.path}/.{self.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            write(tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def is_s3(url: str | Path) -> bool:
    return str(url).startswith(S3_SCHEMES)


def location(url: str | Path) -> Location:
    """A :class:`Location` for a local path or an ``s3://`` (``s3a://``, ``s3arrow://``) URL."""
    text = str(url)
    for scheme in S3_SCHEMES:
        if text.startswith(scheme):
            return Location(s3_filesystem(), text[len(scheme):].rstrip("/"), s3=True)
    return Location(pafs.LocalFileSystem(), str(Path(text).resolve()))


def data_root() -> Location:
    """The data dir of the current settings (``RTML_DATA_DIR``)."""
    return location(settings().data_url)


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem for ``settings().s3`` (endpoint, credentials, region)."""
    s3 = settings().s3
    access, secret = s3.credentials()
    return _s3_filesystem(s3.endpoint, access, secret, s3.region)


_S3_LOCK = threading.Lock()


@cache
def _s3_filesystem(endpoint: str, access: str, secret: str, region: str) -> pafs.S3FileSystem:
    with _S3_LOCK:
        # The AWS SDK in pyarrow >= 21 sends flexible checksums with chunked uploads by default, which
        # S3-compatible servers such as s3proxy reject; checksums only when an operation requires them.
        os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
        os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
        scheme, _, host = endpoint.partition("://")
        return pafs.S3FileSystem(
            access_key=access,
            secret_key=secret,
            endpoint_override=host.rstrip("/"),
            scheme=scheme or "http",
            region=region,
            allow_bucket_creation=True,
            connect_timeout=20,
            request_timeout=120,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=5),
        )


def ensure_bucket(url: str | None = None) -> str:
    """Create the bucket of ``url`` (default: the data dir) if missing; returns its name."""
    loc = location(url or settings().data_url)
    bucket = loc.path.split("/", 1)[0]
    if loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
        loc.fs.create_dir(bucket)
    return bucket


def _fsspec_wrapper():
    from fsspec.implementations.arrow import ArrowFSWrapper

    class PyarrowS3(ArrowFSWrapper):
        """fsspec view of pyarrow's S3 filesystem answering ``s3://`` and ``s3arrow://`` paths."""

        protocol = ("s3", ARROW_PROTOCOL)
        root_marker = ""

        @classmethod
        def _strip_protocol(cls, path):
            path = path[0] if isinstance(path, list) else path
            for scheme in ("s3://", f"{ARROW_PROTOCOL}://"):
                if path.startswith(scheme):
                    return path[len(scheme):]
            return path.lstrip("/")

        def glob(self, path, **kwargs):
            """A folder (no wildcard) stands for its data files, as DuckDB reads a local folder."""
            stripped = self._strip_protocol(path)
            if not any(c in stripped for c in "*?[") and self.isdir(stripped):
                return Location(self.fs, stripped.rstrip("/"), s3=True).files()
            return super().glob(path, **kwargs)

    return PyarrowS3(s3_filesystem(), skip_instance_cache=True)


def register_duckdb(con) -> Any:
    """Let the DuckDB connection ``con`` read ``s3://`` / ``s3arrow://`` through pyarrow (no extensions)."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    if settings().data_on_s3 or settings().s3.access_key_env or settings().s3.credentials_file.exists():
        con.register_filesystem(_fsspec_wrapper())
    return con


def duckdb_connect(**config: Any):
    """A new in-memory DuckDB connection that reads S3 through pyarrow."""
    import duckdb

    return register_duckdb(duckdb.connect(config=config or {}))


_IBIS_REGISTERED: set[int] = set()


def register_ibis_duckdb() -> None:
    """Register pyarrow's S3 route on ibis's default DuckDB backend, the one Feast's duckdb store reads with.

    Feast's sources on an ``s3://`` data dir are ``s3arrow://`` paths (:attr:`Location.feast_uri`): ibis
    would try to load DuckDB's httpfs extension for ``s3://``, which is not installed and must not be
    downloaded."""
    import ibis

    backend = ibis.get_backend()
    if id(backend) in _IBIS_REGISTERED:
        return
    register_duckdb(backend.con)
    _IBIS_REGISTERED.add(id(backend))


S3A_JARS_PREFIX = "spark-s3a-"  # cache_dir/spark-s3a-<hadoop version>/ (infra.spark_deps resolves it)


def s3a_jars() -> list[str]:
    """hadoop-aws + AWS SDK jars already resolved into the cache by `rtml up --s3` (nothing downloads here)."""
    from core.errors import UserFacingError

    dirs = sorted(d for d in settings().cache_dir.glob(f"{S3A_JARS_PREFIX}*") if (d / ".complete").exists())
    if not dirs:
        raise UserFacingError("Spark's s3a jars are not resolved yet: run `rtml up --s3` once")
    return [str(p) for p in sorted(dirs[-1].glob("*.jar"))]


def s3a_conf() -> dict[str, str]:
    """Spark options for ``s3a://`` paths on ``settings().s3`` (endpoint, credentials, path-style, jars)."""
    s3 = settings().s3
    access, secret = s3.credentials()
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")  # inherited by the driver JVM
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    h = "spark.hadoop.fs.s3a."
    return {
        "spark.jars": ",".join(s3a_jars()),
        f"{h}impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        f"{h}endpoint": s3.endpoint,
        f"{h}endpoint.region": s3.region,
        f"{h}path.style.access": "true",
        f"{h}connection.ssl.enabled": str(s3.endpoint.startswith("https")).lower(),
        f"{h}aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        f"{h}access.key": access,
        f"{h}secret.key": secret,
        f"{h}change.detection.mode": "none",
        # executors' Python (backfill buckets, offline writes) reach the same endpoint through core.storage
        "spark.executorEnv.RTML_S3_ENDPOINT": s3.endpoint,
        "spark.executorEnv.RTML_S3_ACCESS_KEY": access,
        "spark.executorEnv.RTML_S3_SECRET_KEY": secret,
        "spark.executorEnv.AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "spark.executorEnv.AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    }
