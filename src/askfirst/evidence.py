"""Evidence: the documents sent with a case (a death certificate, an obituary scan, a
letter of authority), checked by their content and kept outside the database.

:func:`check` decides what a document is from its bytes alone — the name it came with is
never consulted — and refuses anything that is not a whole PDF, PNG or JPEG of at most
:data:`MAX_BYTES`. :func:`keep` checks and then stores, so a refused document leaves
nothing behind. Only the SHA-256 (and the store's location) goes into the ledger's tables;
the bytes live in a :class:`Store`:

- :class:`FolderStore`, a folder (content-addressed, written atomically), the default;
- :class:`S3Store`, an S3-compatible bucket (``pip install 'askfirst[s3]'``).

:func:`store_from_settings` picks one from ``ASKFIRST_EVIDENCE_URL``; unset, it is the folder
``askfirst-evidence`` beside the key folder (:func:`default_folder_for`). Erasing a subject
deletes their documents with :meth:`Store.delete`, which also removes older versions of an
object in a versioned bucket and any half-written copy a killed upload left in the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qsl, urlsplit
from urllib.request import url2pathname

from askfirst.config import EVIDENCE_URL
from askfirst.errors import InputError, NotFound, StorageError

MAX_BYTES = 10 * 1024 * 1024
MEDIA_TYPES = ("application/pdf", "image/png", "image/jpeg")
# An image may have at most this many pixels: a 600 dpi scan of an A4 page has 35 million,
# a 48-megapixel phone photo 48 million. Checked before any pixel is decoded, so a small
# file that would unpack into gigabytes is refused unopened.
MAX_PIXELS = 50_000_000
INSTALL_HINT = "evidence in an S3 bucket needs boto3: pip install 'askfirst[s3]'"
FOLDER_NAME = "askfirst-evidence"

_SUFFIX = {"application/pdf": ".pdf", "image/png": ".png", "image/jpeg": ".jpg"}
_PDF_MAGIC = b"%PDF-"
_PDF_END = b"%%EOF"
# PDF readers look for the end marker in the last 1024 bytes; a "PDF" whose marker is
# further up has something else stuck to its end.
_PDF_TAIL = 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: empty, so always these bytes
_JPEG_MAGIC = b"\xff\xd8\xff"
_SHA = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Checked:
    """A document that passed :func:`check`: what it is, judged by its content."""

    sha256: str  # hex
    media_type: str  # one of MEDIA_TYPES
    size: int  # bytes
    data: bytes = field(repr=False)

    @property
    def suffix(self) -> str:
        """The file name ending its type calls for (``.pdf``, ``.png``, ``.jpg``)."""
        return _SUFFIX[self.media_type]


@dataclass(frozen=True)
class Stored:
    """A checked document that is now in a store: what a case keeps about it."""

    sha256: str
    media_type: str
    size: int
    location: str


def check(data: bytes | BinaryIO, *, name: str = "evidence") -> Checked:
    """What ``data`` is, or :class:`InputError` (one line naming ``name``) if it is empty,
    larger than :data:`MAX_BYTES`, or not a whole PDF, PNG or JPEG by its content.

    A stream is read to :data:`MAX_BYTES` + 1 bytes at most, never further. A PDF must
    parse and have at least one page, and open without a password; an image must decode
    whole, with at most :data:`MAX_PIXELS` pixels. ``name`` only labels the messages: an
    HTML page named ``x.png`` is refused, a JPEG named ``x.pdf`` is a JPEG.
    """
    what = "the evidence" if name == "evidence" else f"evidence {name!r}"
    content = _read_bounded(data)
    if not content:
        raise InputError(f"{what} is empty: attach the document itself, as a PDF, PNG or JPEG")
    if len(content) > MAX_BYTES:
        raise InputError(
            f"{what} is larger than 10 MB ({MAX_BYTES:,} bytes): send a smaller scan or photo"
        )
    if content.startswith(_PDF_MAGIC):
        _check_pdf(content, what)
        media_type = "application/pdf"
    elif content.startswith(_PNG_MAGIC):
        _check_image(content, "PNG", what)
        media_type = "image/png"
    elif content.startswith(_JPEG_MAGIC):
        _check_image(content, "JPEG", what)
        media_type = "image/jpeg"
    else:
        raise InputError(
            f"{what} is not a PDF, PNG or JPEG (judged by its content, not its name): "
            "send the document in one of those"
        )
    return Checked(hashlib.sha256(content).hexdigest(), media_type, len(content), content)


def _read_bounded(data: bytes | BinaryIO) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    chunks: list[bytes] = []
    left = MAX_BYTES + 1
    while left > 0:
        chunk = data.read(min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _check_pdf(content: bytes, what: str) -> None:
    from pypdf import PdfReader

    damaged = f"{what} starts like a PDF but is not a whole, readable one: send it again"
    if _PDF_END not in content[-_PDF_TAIL:]:
        raise InputError(damaged)
    try:
        # Not strict: a scanner's slightly-off cross-reference table is repaired, as
        # every PDF viewer repairs it; what cannot be read as pages is still refused.
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InputError(f"{what} is a PDF locked with a password: send it unlocked")
        pages = len(reader.pages)
    except InputError:
        raise
    except Exception as e:  # a hostile file can break any part of a parser: all are refusals
        raise InputError(damaged) from e
    if pages < 1:
        raise InputError(f"{what} is a PDF with no pages: send the document itself")


def _check_image(content: bytes, kind: str, what: str) -> None:
    from PIL import Image

    damaged = f"{what} starts like a {kind} but is not a whole, readable image: send it again"
    if kind == "PNG" and not content.endswith(_PNG_END):
        raise InputError(damaged)  # cut short, or something stuck after the image's end
    try:
        with Image.open(io.BytesIO(content), formats=[kind]) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InputError(
                    f"{what} is a {width} by {height} image, more than {MAX_PIXELS:,} pixels: "
                    "send a smaller scan or photo"
                )
            image.verify()  # a PNG's checksums, chunk by chunk
        with Image.open(io.BytesIO(content), formats=[kind]) as image:
            if kind == "JPEG":
                # decode every byte, at an eighth of the size: a cut-off file still fails
                image.draft(None, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(
            f"{what} has more pixels than askfirst opens: send a smaller scan or photo"
        ) from e
    except Exception as e:  # a hostile file can break any part of a decoder: all are refusals
        raise InputError(damaged) from e


class Store(Protocol):
    """Where evidence lives. Locations are strings a case keeps beside the SHA-256."""

    def put(self, checked: Checked) -> str:
        """Store ``checked`` and give its location; the same content twice is one copy."""
        ...

    def open(self, location: str) -> bytes:
        """The stored bytes (at most :data:`MAX_BYTES`), checked against their SHA-256;
        :class:`NotFound` when they are gone."""
        ...

    def delete(self, location: str) -> None:
        """Remove the document for good; one already gone is no error."""
        ...


def keep(store: Store, data: bytes | BinaryIO, *, name: str = "evidence") -> Stored:
    """Check ``data`` (see :func:`check`) and put it in ``store``: refused, nothing is stored."""
    checked = check(data, name=name)
    return Stored(checked.sha256, checked.media_type, checked.size, store.put(checked))


# ---- a folder -----------------------------------------------------------------------------------
# <root>/<sha[:2]>/<sha>. A put writes ".<sha>.<random>.tmp" beside the target under an
# fcntl lock (it dies with the process, however that ends), fsyncs it, renames it into
# place and fsyncs the folder. A temporary file whose lock is free belongs to a put that
# failed or was killed; every put and delete removes those it finds.


class FolderStore:
    """Evidence in a folder on this machine (or a mounted one), one file per content."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"

    def location(self, sha256: str) -> str:
        return self._path(sha256).as_uri()

    def put(self, checked: Checked) -> str:
        target = self._path(checked.sha256)
        try:
            self.sweep()
            if not _same_file(target, checked):
                self._write(target, checked.data)
        except OSError as e:
            raise StorageError(
                f"evidence folder {str(self.root)!r}: cannot store a document "
                f"({e.strerror or e}); check that askfirst may write there"
            ) from e
        return target.as_uri()

    def open(self, location: str) -> bytes:
        path = self._path_of(location)
        try:
            with path.open("rb") as f:
                content = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            raise NotFound(f"evidence {location!r} is no longer stored (erased?)") from None
        except OSError as e:
            raise StorageError(f"evidence {location!r}: cannot read it ({e.strerror or e})") from e
        _verify(content, path.name, location)
        return content

    def delete(self, location: str) -> None:
        path = self._path_of(location)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                _fsync_folder(path.parent)
            self._sweep_folder(path.parent, path.name)
        except OSError as e:
            raise StorageError(
                f"evidence {location!r}: cannot delete it ({e.strerror or e})"
            ) from e

    def sweep(self) -> int:
        """Remove what failed or killed puts left (temporary files no put holds); how many."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for folder in self.root.iterdir():
                if len(folder.name) == 2 and folder.is_dir():
                    removed += self._sweep_folder(folder)
        return removed

    def _path(self, sha256: str) -> Path:
        if not _SHA.fullmatch(sha256):
            raise InputError(f"{sha256!r} is not a SHA-256 in hex")
        return self.root / sha256[:2] / sha256

    def _path_of(self, location: str) -> Path:
        parts = urlsplit(location)
        path = Path(url2pathname(parts.path)) if parts.scheme == "file" else None
        if (
            path is None
            or parts.netloc not in ("", "localhost")
            or parts.query
            or parts.fragment
            or not _SHA.fullmatch(path.name)
            or path.parent != self.root / path.name[:2]
        ):
            raise InputError(f"{location!r} is not a document in the evidence folder {self.root}")
        return path

    def _write(self, target: Path, data: bytes) -> None:
        folder = target.parent
        if not folder.is_dir():
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.mkdir(exist_ok=True, mode=0o700)
            _fsync_folder(self.root)
        for _ in range(3):
            temp = folder / f".{target.name}.{secrets.token_hex(8)}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:  # a sweep may have taken the file between its making and the lock
                    if os.stat(temp).st_ino != os.fstat(fd).st_ino:
                        continue
                except FileNotFoundError:
                    continue
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                    os.replace(temp, target)
                except BaseException:
                    with contextlib.suppress(OSError):
                        temp.unlink()
                    raise
                _fsync_folder(folder)
                return
            finally:
                os.close(fd)
        raise OSError(f"could not write a temporary file in {folder}")

    @staticmethod
    def _sweep_folder(folder: Path, sha256: str | None = None) -> int:
        removed = 0
        for temp in _temporary_files(folder, sha256):
            try:
                fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a put is writing it
            try:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
                    removed += 1
            finally:
                os.close(fd)
        return removed


def _temporary_files(folder: Path, sha256: str | None) -> Iterator[Path]:
    start = f".{sha256}." if sha256 else "."
    try:
        names = [e.name for e in os.scandir(folder)]
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(start) and name.endswith(".tmp"):
            yield folder / name


def _same_file(target: Path, checked: Checked) -> bool:
    """Whether ``target`` already holds exactly ``checked`` (a put of the same content)."""
    try:
        with target.open("rb") as f:
            return hashlib.sha256(f.read(MAX_BYTES + 1)).hexdigest() == checked.sha256
    except FileNotFoundError:
        return False


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify(content: bytes, sha256: str, location: str) -> None:
    if len(content) > MAX_BYTES or hashlib.sha256(content).hexdigest() != sha256:
        raise StorageError(
            f"evidence {location!r} does not match its SHA-256: it was changed outside askfirst"
        )


# ---- an S3-compatible bucket ---------------------------------------------------------------------


class S3Store:
    """Evidence in an S3-compatible bucket, one object per content: ``PREFIX/SHA256``.

    Credentials come from boto3's usual sources (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and ``~/.aws``, an instance role). askfirst
    needs ``s3:GetObject``, ``s3:PutObject``, ``s3:DeleteObject``, and — so that deleting
    also removes the older versions a versioned bucket keeps — ``s3:ListBucketVersions``
    and ``s3:DeleteObjectVersion``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:
            raise InputError(INSTALL_HINT) from e
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    def __repr__(self) -> str:
        return f"S3Store({self.bucket!r}, {self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    def key(self, sha256: str) -> str:
        if not _SHA.fullmatch(sha256):
            raise InputError(f"{sha256!r} is not a SHA-256 in hex")
        return f"{self.prefix}/{sha256}" if self.prefix else sha256

    def location(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key(sha256)}"

    def put(self, checked: Checked) -> str:
        key = self.key(checked.sha256)
        with self._errors("store a document"):
            if self._size(key) != checked.size:  # a versioned bucket gets no second copy
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=checked.data, ContentType=checked.media_type
                )
        return self.location(checked.sha256)

    def open(self, location: str) -> bytes:
        key = self._key_of(location)
        with self._errors(f"read {location!r}"):
            try:
                got = self._client.get_object(Bucket=self.bucket, Key=key)
            except self._client.exceptions.NoSuchKey:
                raise NotFound(f"evidence {location!r} is no longer stored (erased?)") from None
            with contextlib.closing(got["Body"]) as body:
                content = bytes(body.read(MAX_BYTES + 1))
        _verify(content, key.rsplit("/", 1)[-1], location)
        return content

    def delete(self, location: str) -> None:
        key = self._key_of(location)
        with self._errors(f"delete {location!r}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)
            try:
                pages = self._client.get_paginator("list_object_versions").paginate(
                    Bucket=self.bucket, Prefix=key
                )
                versions = [
                    v["VersionId"]
                    for page in pages
                    for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                    if v["Key"] == key
                ]
            except self._client_error() as e:
                if _code(e) in ("NotImplemented", "XNotImplemented"):
                    return  # a store that keeps no versions
                raise StorageError(
                    f"evidence {location!r}: deleted, but its older versions could not be "
                    f"listed ({_code(e)}); give askfirst s3:ListBucketVersions and "
                    "s3:DeleteObjectVersion on the bucket"
                ) from e
            for version in versions:
                self._client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)

    def _size(self, key: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except self._client_error() as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def _key_of(self, location: str) -> str:
        start = f"s3://{self.bucket}/{self.prefix}/" if self.prefix else f"s3://{self.bucket}/"
        sha = location[len(start) :] if location.startswith(start) else ""
        if not _SHA.fullmatch(sha):
            raise InputError(
                f"{location!r} is not a document in the evidence bucket {start.rstrip('/')}"
            )
        return self.key(sha)

    @staticmethod
    def _client_error() -> type[Exception]:
        from botocore.exceptions import ClientError

        return ClientError  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """botocore's errors as one line each."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        try:
            yield
        except ClientError as e:
            raise StorageError(f"evidence bucket {where}: cannot {doing} ({_code(e)})") from e
        except BotoCoreError as e:
            raise StorageError(f"evidence bucket {where}: cannot {doing} ({e})") from e


def _code(error: Exception) -> str:
    response: dict[str, Any] = getattr(error, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", "") or type(error).__name__)


# ---- from the settings ---------------------------------------------------------------------------


def default_folder_for(key_dir: str | Path) -> Path:
    """Where evidence goes when ``ASKFIRST_EVIDENCE_URL`` is unset: the folder
    ``askfirst-evidence`` beside the key folder (both hold what stays out of the database)."""
    return Path(key_dir).expanduser().absolute().parent / FOLDER_NAME


def store_from_settings(url: str | None, default_folder: Path) -> Store:
    """The store ``ASKFIRST_EVIDENCE_URL`` names: unset or empty, a folder at
    ``default_folder``; ``file:///FOLDER``, that folder; ``s3://BUCKET/PREFIX`` with
    optional ``?endpoint=http://HOST:PORT`` and ``&region=NAME``, an S3-compatible bucket.
    Anything else is an :class:`InputError` that names the setting."""
    if url is None or not url.strip():
        return FolderStore(default_folder)
    url = url.strip()
    bad = f"{EVIDENCE_URL.env}={url!r}"
    try:
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as e:
        raise InputError(f"{bad}: not a URL ({e})") from None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise InputError(f"{bad}: give a folder as file:///ABSOLUTE/PATH")
        path = Path(url2pathname(parts.path))
        if not path.is_absolute():
            raise InputError(f"{bad}: give a folder as file:///ABSOLUTE/PATH")
        return FolderStore(path)
    if parts.scheme == "s3":
        return _s3_from_url(bad, parts.netloc, parts.path, params, parts.fragment)
    raise InputError(f"{bad}: give file:///FOLDER or s3://BUCKET/PREFIX?endpoint=http://HOST:PORT")


def _s3_from_url(
    bad: str, bucket: str, path: str, params: list[tuple[str, str]], fragment: str
) -> S3Store:
    if "@" in bucket:
        raise InputError(
            f"{bad}: leave credentials out of the URL; boto3 reads them from "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws or an instance role"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", bucket) or fragment:
        raise InputError(f"{bad}: give s3://BUCKET/PREFIX, with a bucket name after s3://")
    options: dict[str, str] = {}
    for key, value in params:
        if key not in ("endpoint", "region") or key in options or not value:
            raise InputError(
                f"{bad}: the query may give endpoint=URL and region=NAME, once each ({key!r}?)"
            )
        options[key] = value
    endpoint = options.get("endpoint")
    if endpoint is not None:
        try:
            e = urlsplit(endpoint)
            ok = e.scheme in ("http", "https") and bool(e.hostname) and e.port != 0
        except ValueError:
            ok = False
        if not ok:
            raise InputError(f"{bad}: the endpoint must be http://HOST:PORT or https://HOST")
    return S3Store(bucket, path, endpoint_url=endpoint, region=options.get("region"))
