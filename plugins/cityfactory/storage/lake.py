"""The data lake: one URI, the same keys on a local folder (``file://``) or S3 (``s3://``, boto3).

Keys follow the firm layout of ARCHITECTURE.md (``landing/``, ``raw/``, ``bronze/`` ...). Every
write is atomic: temp file + rename locally, one complete object put on S3. Writes return a
:class:`StoredObject` (URI, sha256, size) so callers can record exactly what they produced.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class LakeError(RuntimeError):
    """A lake operation failed; the message names the operation, the URI and the cause."""


@dataclass(frozen=True)
class StoredObject:
    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ObjectFacts:
    size: int
    modified_ns: int
    links: int = 1  # names of the same file (a local lake's hard links); an object store has one


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)


class Lake:
    """Common interface; see :func:`open_lake`."""

    uri: str

    def uri_for(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        raise NotImplementedError

    def put_file(self, key: str, path: Path) -> StoredObject:
        raise NotImplementedError

    def put_new(self, key: str, data: bytes, read_only: bool = False) -> bool:
        """Write only if ``key`` does not exist yet (atomically); False if it already did.
        ``read_only``: nobody may change the stored object afterwards (raw is immutable)."""
        raise NotImplementedError

    def describe(self, key: str) -> ObjectFacts:
        """Size, last change and link count of one object, without reading it; ``LakeError`` for a
        link, a device or a folder."""
        raise NotImplementedError

    def move(self, source: str, key: str) -> None:
        """Move an object without reading it through memory (a whole file set aside)."""
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def list(self, prefix: str, include_partial: bool = False) -> list[str]:
        """All keys under ``prefix`` (recursive), sorted; ``include_partial`` also lists names that
        look like unfinished writes (``.tmp-*``) and, on a folder, links, so that a caller taking
        files from others can report them instead of silently skipping them."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, keys: list[str]) -> None:
        raise NotImplementedError

    def replace_prefix(self, prefix: str, local_dir: Path) -> list[StoredObject]:
        """Make ``prefix`` hold exactly the files of ``local_dir`` (a partition rewritten whole).
        ``local_dir`` may be moved into place, so it is consumed."""
        raise NotImplementedError

    def staging_dir(self):
        """A temporary folder to build partitions in before :meth:`replace_prefix`."""
        return tempfile.TemporaryDirectory(prefix="cityfactory-stage-")

    def list_dirs(self, prefix: str) -> list[str]:
        """Immediate sub-folder names under ``prefix`` (e.g. the ``dt=`` partitions)."""
        names = {k[len(prefix.rstrip("/")) + 1 :].split("/", 1)[0] for k in self.list(prefix)}
        return sorted(n for n in names if n and not n.startswith("."))


class LocalLake(Lake):
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.uri = self.root.as_uri()
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if ".." in key.split("/") or key.startswith("/"):
            raise LakeError(f"key {key!r} escapes the lake root {self.root}")
        return self.root / key

    def path_of(self, key: str) -> Path:
        return self._path(key)

    def _staged(self, key: str, data: bytes) -> tuple[Path, str]:
        """The target path, and a temp file beside it already holding ``data``."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return path, tmp

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        path, tmp = self._staged(key, data)
        os.replace(tmp, path)
        return StoredObject(self.uri_for(key), sha256_bytes(data), len(data))

    def put_file(self, key: str, path: Path) -> StoredObject:
        """Copied block by block (a large file never passes through memory whole)."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        return StoredObject(self.uri_for(key), sha256_file(target), target.stat().st_size)

    def put_new(self, key: str, data: bytes, read_only: bool = False) -> bool:
        path, tmp = self._staged(key, data)
        if read_only:
            os.chmod(tmp, 0o444)
        try:
            os.link(tmp, path)  # atomic, and fails if the name is taken
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def describe(self, key: str) -> ObjectFacts:
        try:
            facts = os.lstat(self._path(key))
        except FileNotFoundError:
            raise LakeError(f"read {self.uri_for(key)}: no such object") from None
        if not stat.S_ISREG(facts.st_mode):
            raise LakeError(f"read {self.uri_for(key)}: not a regular file")
        return ObjectFacts(facts.st_size, facts.st_mtime_ns, facts.st_nlink)

    def move(self, source: str, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(source), target)  # a rename: no byte read, whatever the size

    def get_bytes(self, key: str) -> bytes:
        """A regular file's bytes; a link, device or folder is refused (opened with O_NOFOLLOW)."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise LakeError(f"read {self.uri_for(key)}: no such object") from None
        except OSError as exc:  # ELOOP: a symbolic link
            raise LakeError(f"read {self.uri_for(key)}: not a regular file ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise LakeError(f"read {self.uri_for(key)}: not a regular file")
            return handle.read()

    def list(self, prefix: str, include_partial: bool = False) -> list[str]:
        base = self._path(prefix)
        root = str(self.root) + os.sep
        keys = []
        for folder, dirs, files in os.walk(base):  # os.walk: far cheaper than pathlib on many small folders
            linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]  # never followed
            dirs[:] = [d for d in dirs if not d.startswith(".tmp-") and d not in linked]
            names = files + linked if include_partial else [f for f in files if not f.startswith(".tmp-")]
            keys += [os.path.join(folder, f)[len(root):].replace(os.sep, "/") for f in names]
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def staging_dir(self):
        # Inside the lake root, so partitions move into place by rename instead of a copy.
        return tempfile.TemporaryDirectory(dir=self.root, prefix=".tmp-stage-")

    def replace_prefix(self, prefix: str, local_dir: Path) -> list[StoredObject]:
        target = self._path(prefix)
        if not Path(local_dir).is_dir() or not any(Path(local_dir).iterdir()):  # the new set is empty
            shutil.rmtree(target, ignore_errors=True)
            return []
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.parent / f".tmp-{uuid.uuid4().hex}"
        if Path(local_dir).is_relative_to(self.root):  # staged inside the lake: a rename
            os.replace(local_dir, staged)
        else:
            shutil.copytree(local_dir, staged)
        trash = target.parent / f".tmp-old-{uuid.uuid4().hex}"
        if target.exists():
            os.replace(target, trash)
        os.replace(staged, target)
        shutil.rmtree(trash, ignore_errors=True)
        return [
            StoredObject(self.uri_for(join_key(prefix, f.name)), sha256_file(f), f.stat().st_size)
            for f in sorted(target.iterdir())
        ]


class S3Lake(Lake):
    """S3 through boto3; endpoint and credentials come from the standard AWS environment
    (``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID`` ...) so any S3 server works."""

    def __init__(self, bucket: str, prefix: str):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # A fresh session reads the environment now (boto3's default session caches credentials).
        session = boto3.session.Session()
        self.client = session.client("s3", config=Config(retries={"max_attempts": 3, "mode": "standard"}))

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _fail(self, op: str, key: str, exc: Exception) -> LakeError:
        endpoint = self.client.meta.endpoint_url
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        hint = ""
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            hint = " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        return LakeError(f"{op} {self.uri_for(key)} at {endpoint} failed: {code}: {exc}{hint}")

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", key, exc) from exc
        return StoredObject(self.uri_for(key), sha256_bytes(data), len(data))

    def put_file(self, key: str, path: Path) -> StoredObject:
        """Uploaded in parts by boto3 (a large file never passes through memory whole)."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._fail("write", key, exc) from exc
        return StoredObject(self.uri_for(key), sha256_file(Path(path)), Path(path).stat().st_size)

    def put_new(self, key: str, data: bytes, read_only: bool = False) -> bool:
        """Objects are never changed in place here; ``read_only`` is the bucket's policy (object lock)."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise self._fail("write", key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("read", key, exc) from exc

    def describe(self, key: str) -> ObjectFacts:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("read", key, exc) from exc
        return ObjectFacts(head["ContentLength"], int(head["LastModified"].timestamp() * 1e9))

    def move(self, source: str, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # a managed copy: server side, in parts beyond 5 GB
            self.client.copy({"Bucket": self.bucket, "Key": self._key(source)}, self.bucket, self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", key, exc) from exc
        self.delete([source])

    def list(self, prefix: str, include_partial: bool = False) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix).rstrip("/") + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted(keys)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("stat", key, exc) from exc

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            if chunk:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    def replace_prefix(self, prefix: str, local_dir: Path) -> list[StoredObject]:
        # New objects first (each put is atomic), then remove what the new set no longer has.
        old = set(self.list(prefix))
        files = sorted(Path(local_dir).iterdir()) if Path(local_dir).is_dir() else []
        written = [self.put_file(join_key(prefix, f.name), f) for f in files]
        keep = {join_key(prefix, f.name) for f in files}
        self.delete(sorted(old - keep))
        return written


def open_lake(uri: str | None = None) -> Lake:
    """The lake at ``uri`` (default: the configured ``CITYFACTORY_LAKE_URI``)."""
    if uri is None:
        from cityfactory.settings import get_settings

        uri = get_settings().lake_uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return LocalLake(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise LakeError(f"lake URI {uri!r} names no bucket")
        return S3Lake(parsed.netloc, parsed.path)
    raise LakeError(f"lake URI {uri!r}: scheme must be file:// or s3://")
