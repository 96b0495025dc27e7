"""Evidence: checked by its content (never its name), at most 10 MB, kept in a folder or an
S3-compatible bucket (moto's server, over real HTTP); a refusal stores nothing, the same
document twice is one copy, and a deleted one is gone for good."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pypdf import PdfWriter

from askfirst import evidence
from askfirst.errors import InputError, NotFound, StorageError
from askfirst.evidence import MAX_BYTES, FolderStore, S3Store, check, keep

SRC = Path(evidence.__file__).resolve().parent.parent


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (30, 30, 200)).save(out, "JPEG")
    return out.getvalue()


def pdf(pages: int = 1, password: str | None = None) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    if password is not None:
        writer.encrypt(user_password=password, owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def executable() -> bytes:
    path = shutil.which("true") or sys.executable
    return Path(path).read_bytes()


# ---- the stores, each test with its own folder or bucket ----------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials as boto3 reads them from the environment (moto takes any)."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def new_bucket(endpoint: str, *, versioned: bool = False) -> tuple[str, Any]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    name = f"evidence-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name, client


def bucket_contents(client: Any, bucket: str) -> list[tuple[str, str]]:
    """Every object version and delete marker: what is left of anything ever put."""
    got = client.list_object_versions(Bucket=bucket)
    return sorted(
        (v["Key"], v.get("VersionId", ""))
        for v in [*got.get("Versions", []), *got.get("DeleteMarkers", [])]
    )


def folder_contents(root: Path) -> list[str]:
    """Every file under ``root``, hidden ones (a put's temporary files) included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(params=["folder", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[evidence.Store, Callable[[], list[Any]]]:
    """A fresh store, and what is in it."""
    if request.param == "folder":
        root = tmp_path / "evidence"
        return FolderStore(root), lambda: folder_contents(root)
    request.getfixturevalue("aws")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket, client = new_bucket(endpoint)
    s3 = S3Store(bucket, "cases/evidence", endpoint_url=endpoint)
    return s3, lambda: bucket_contents(client, bucket)


# ---- what is accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "media_type", "suffix"),
    [(pdf, "application/pdf", ".pdf"), (png, "image/png", ".png"), (jpeg, "image/jpeg", ".jpg")],
)
def test_a_pdf_a_png_and_a_jpeg_are_accepted_with_their_sha256(
    make: Callable[[], bytes], media_type: str, suffix: str
) -> None:
    data = make()
    checked = check(data, name=f"scan{suffix}")
    assert (checked.media_type, checked.size, checked.suffix) == (media_type, len(data), suffix)
    assert checked.sha256 == hashlib.sha256(data).hexdigest()
    assert checked.data == data
    assert str(len(data)) in repr(checked) and "data=" not in repr(checked)


def test_a_jpeg_named_pdf_is_a_jpeg_the_name_is_ignored() -> None:
    assert check(jpeg(), name="death-certificate.pdf").media_type == "image/jpeg"


def test_a_file_object_is_read_like_bytes(tmp_path: Path) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(pdf(pages=2))
    with path.open("rb") as f:
        assert check(f, name=path.name).media_type == "application/pdf"


def test_a_document_of_exactly_10_mb_is_accepted() -> None:
    # a JPEG may carry data after its end (phones append a second image there)
    data = jpeg() + b"\0" * (MAX_BYTES - len(jpeg()))
    assert check(data).size == MAX_BYTES


def test_a_pdf_that_needs_no_password_to_open_is_accepted() -> None:
    assert check(pdf(password="")).media_type == "application/pdf"


# ---- what is refused, and then nothing is stored -------------------------------------------------


def _bitmap_png(width: int, height: int) -> bytes:
    """A valid PNG of one bit a pixel: small to make, however many pixels it has."""
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


def _truncated_png() -> bytes:
    data = png()
    return data[: len(data) // 2]


REFUSED: dict[str, tuple[Callable[[], bytes], str, str]] = {
    # name: (content, the name it comes with, what the message says)
    "pdf header on an executable": (
        lambda: b"%PDF-1.4\n" + executable(),
        "certificate.pdf",
        "is not a whole, readable one",
    ),
    "pdf with an executable after it": (
        lambda: pdf() + executable(),
        "certificate.pdf",
        "is not a whole, readable one",
    ),
    "html named png": (
        lambda: b"<!doctype html><html><script>alert(1)</script></html>",
        "obituary.png",
        "is not a PDF, PNG or JPEG (judged by its content, not its name)",
    ),
    "10 MB + 1 byte": (
        lambda: pdf() + b"\n" * (MAX_BYTES + 1 - len(pdf())),
        "scan.pdf",
        "is larger than 10 MB",
    ),
    "empty": (lambda: b"", "letter.pdf", "is empty"),
    "truncated png": (_truncated_png, "photo.png", "is not a whole, readable image"),
    "png without its last byte": (lambda: png()[:-1], "photo.png", "not a whole, readable image"),
    "png with something after its end": (
        lambda: png() + b"PK\x03\x04",
        "photo.png",
        "is not a whole, readable image",
    ),
    "truncated jpeg": (lambda: jpeg()[:-3], "photo.jpg", "is not a whole, readable image"),
    "jpeg magic then garbage": (
        lambda: b"\xff\xd8\xff" + os.urandom(2000),
        "photo.jpg",
        "is not a whole, readable image",
    ),
    "pdf with no pages": (lambda: pdf(pages=0), "blank.pdf", "is a PDF with no pages"),
    "pdf locked with a password": (
        lambda: pdf(password="secret"),
        "locked.pdf",
        "is a PDF locked with a password",
    ),
    "too many pixels": (
        lambda: _bitmap_png(8000, 7000),
        "huge.png",
        "is a 8000 by 7000 image, more than 50,000,000 pixels",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_one_clear_line_naming_the_file_and_nothing_stored(
    case: str, store: tuple[evidence.Store, Callable[[], list[Any]]]
) -> None:
    make, name, message = REFUSED[case]
    target, contents = store
    with pytest.raises(InputError) as refused:
        keep(target, make(), name=name)
    text = str(refused.value)
    assert "\n" not in text
    assert text.startswith(f"evidence {name!r} ")
    assert message in text
    assert contents() == []


def test_a_name_with_a_line_break_stays_on_one_line() -> None:
    with pytest.raises(InputError) as refused:
        check(b"", name="a\nb.pdf")
    assert "\n" not in str(refused.value)
    assert "'a\\nb.pdf'" in str(refused.value)


class EndlessStream(io.RawIOBase):
    """A PDF header and then zeros for ever; fails the test if read past the limit."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = len(buffer)
        if self.given + n > MAX_BYTES + 1:
            raise AssertionError(f"read {self.given + n} bytes, past {MAX_BYTES + 1}")
        buffer[:n] = (b"%PDF-1.4\n" + b"\0" * n)[:n] if self.given == 0 else b"\0" * n
        self.given += n
        return n


def test_a_stream_longer_than_10_mb_is_not_read_whole(tmp_path: Path) -> None:
    stream = EndlessStream()
    root = tmp_path / "evidence"
    with pytest.raises(InputError, match="is larger than 10 MB"):
        keep(FolderStore(root), stream, name="endless.pdf")  # type: ignore[arg-type]
    assert stream.given == MAX_BYTES + 1
    assert not root.exists()


# ---- storing, opening, deleting ------------------------------------------------------------------


def test_stored_once_opened_whole_and_deleted_for_good(
    store: tuple[evidence.Store, Callable[[], list[Any]]],
) -> None:
    target, contents = store
    data = png()
    first = keep(target, data, name="a.png")
    second = keep(target, io.BytesIO(data), name="the same, renamed.png")
    assert first == second
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.sha256 in first.location
    assert len(contents()) == 1
    assert target.open(first.location) == data

    letter = pdf()
    other = keep(target, letter, name="b.pdf")
    assert len(contents()) == 2

    target.delete(first.location)
    assert len(contents()) == 1
    with pytest.raises(NotFound, match="no longer stored"):
        target.open(first.location)
    target.delete(first.location)  # gone already: no error
    assert target.open(other.location) == letter
    target.delete(other.location)
    assert contents() == []


def test_a_location_outside_the_store_is_refused(
    store: tuple[evidence.Store, Callable[[], list[Any]]], tmp_path: Path
) -> None:
    target, _ = store
    kept = keep(target, png())
    outside = tmp_path / "secret"
    outside.write_text("not evidence")
    sha = kept.sha256
    for location in (
        outside.as_uri(),
        "file:///etc/passwd",
        f"s3://another-bucket/cases/evidence/{sha}",
        f"s3://another-bucket/{sha}",
        kept.location + "/..",
        kept.location[: -len(sha)] + "../" + sha,
        kept.location[:-1],
        kept.location + "?version=1",
    ):
        with pytest.raises(InputError, match="is not a document in the evidence"):
            target.open(location)
        with pytest.raises(InputError, match="is not a document in the evidence"):
            target.delete(location)
    assert outside.exists()
    assert target.open(kept.location) == png()


def test_a_document_changed_behind_askfirsts_back_is_not_served(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "evidence")
    kept = keep(store, png())
    path = tmp_path / "evidence" / kept.sha256[:2] / kept.sha256
    path.write_bytes(jpeg())
    with pytest.raises(StorageError, match="does not match its SHA-256"):
        store.open(kept.location)


def test_the_folder_keeps_files_private(tmp_path: Path) -> None:
    root = tmp_path / "evidence"
    kept = keep(FolderStore(root), png())
    path = root / kept.sha256[:2] / kept.sha256
    assert path.stat().st_mode & 0o777 == 0o600
    assert root.stat().st_mode & 0o777 == 0o700
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_a_put_that_fails_leaves_no_temporary_file(tmp_path: Path) -> None:
    root = tmp_path / "evidence"
    checked = check(png())
    # the target is a folder: the final rename fails after the bytes were written
    (root / checked.sha256[:2] / checked.sha256).mkdir(parents=True)
    with pytest.raises(StorageError, match="cannot store a document"):
        FolderStore(root).put(checked)
    assert folder_contents(root) == []


def test_a_put_killed_half_way_is_cleaned_up_by_the_next_put(tmp_path: Path) -> None:
    """A real put in another process, killed after writing its temporary file and before
    renaming it; the next put (another document) removes what it left."""
    root = tmp_path / "evidence"
    blob = tmp_path / "doc.png"
    blob.write_bytes(png())
    code = textwrap.dedent(
        f"""
        import os, sys
        from askfirst import evidence
        def stop(*args):
            print("written", flush=True)
            sys.stdin.read()  # killed here
        os.replace = stop
        store = evidence.FolderStore({str(root)!r})
        store.put(evidence.check(open({str(blob)!r}, "rb").read()))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"written\n"
        left = folder_contents(root)
        assert len(left) == 1 and left[0].endswith(".tmp")
        # while the put is alive, its file is its own
        assert FolderStore(root).sweep() == 0
        child.kill()
    finally:
        child.wait()
    store = FolderStore(root)
    kept = keep(store, jpeg())
    assert folder_contents(root) == [f"{kept.sha256[:2]}/{kept.sha256}"]


def test_deleting_also_removes_a_half_written_copy(tmp_path: Path) -> None:
    """Erasure must leave nothing: a temporary file of the same document, from a put
    that died, goes with the document."""
    root = tmp_path / "evidence"
    store = FolderStore(root)
    kept = keep(store, png())
    leftover = root / kept.sha256[:2] / f".{kept.sha256}.0123456789abcdef.tmp"
    leftover.write_bytes(png()[:10])
    store.delete(kept.location)
    assert folder_contents(root) == []


def test_a_temporary_file_a_live_put_holds_is_left_alone(tmp_path: Path) -> None:
    import fcntl

    root = tmp_path / "evidence"
    store = FolderStore(root)
    keep(store, png())
    sha = check(jpeg()).sha256
    writing = root / sha[:2] / f".{sha}.0123456789abcdef.tmp"
    writing.parent.mkdir(exist_ok=True)
    fd = os.open(writing, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        keep(store, pdf())
        assert writing.exists()
    finally:
        os.close(fd)
    assert store.sweep() == 1
    assert not writing.exists()


# ---- S3 ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_deleting_from_a_versioned_bucket_leaves_no_old_version(s3_endpoint: str) -> None:
    bucket, client = new_bucket(s3_endpoint, versioned=True)
    store = S3Store(bucket, endpoint_url=s3_endpoint)
    kept = keep(store, pdf())
    keep(store, pdf())  # the same again: no second version
    assert len(bucket_contents(client, bucket)) == 1
    head = client.head_object(Bucket=bucket, Key=kept.sha256)
    assert head["ContentType"] == "application/pdf"
    store.delete(kept.location)
    assert bucket_contents(client, bucket) == []


@pytest.mark.usefixtures("aws")
def test_an_s3_store_that_cannot_be_reached_is_one_line() -> None:
    store = S3Store("evidence", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageError) as failed:
        store.put(check(png()))
    assert str(failed.value).startswith("evidence bucket s3://evidence: cannot store a document")
    assert "\n" not in str(failed.value)


@pytest.mark.usefixtures("aws")
def test_an_s3_bucket_that_does_not_exist_is_one_line(s3_endpoint: str) -> None:
    store = S3Store("no-such-bucket-here", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match=r"cannot store a document \(NoSuchBucket\)"):
        store.put(check(png()))


def test_without_boto3_the_s3_store_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(InputError, match=r"pip install 'askfirst\[s3\]'"):
        S3Store("evidence")


# ---- the setting ---------------------------------------------------------------------------------


def test_unset_the_evidence_goes_to_the_default_folder(tmp_path: Path) -> None:
    for url in (None, "", "  "):
        store = evidence.store_from_settings(url, tmp_path / "here")
        assert isinstance(store, FolderStore) and store.root == tmp_path / "here"
    assert evidence.default_folder_for(tmp_path / "askfirst-keys") == (
        tmp_path / "askfirst-evidence"
    )


def test_a_file_url_is_a_folder(tmp_path: Path) -> None:
    store = evidence.store_from_settings((tmp_path / "kept here").as_uri(), tmp_path / "default")
    assert isinstance(store, FolderStore) and store.root == tmp_path / "kept here"
    kept = keep(store, png())
    assert (tmp_path / "kept here" / kept.sha256[:2] / kept.sha256).exists()
    assert not (tmp_path / "default").exists()


@pytest.mark.usefixtures("aws")
def test_an_s3_url_is_a_bucket(s3_endpoint: str, tmp_path: Path) -> None:
    bucket, client = new_bucket(s3_endpoint)
    url = f"s3://{bucket}/askfirst/evidence/?endpoint={s3_endpoint}&region=us-east-1"
    store = evidence.store_from_settings(url, tmp_path)
    assert isinstance(store, S3Store)
    kept = keep(store, jpeg())
    assert kept.location == f"s3://{bucket}/askfirst/evidence/{kept.sha256}"
    assert bucket_contents(client, bucket)[0][0] == f"askfirst/evidence/{kept.sha256}"
    assert store.open(kept.location) == jpeg()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example.com/evidence",
        "/var/lib/askfirst/evidence",
        "file://otherhost/evidence",
        "file:relative/evidence",
        "file:///evidence?x=1",
        "s3://",
        "s3:///prefix",
        "s3://key:secret@bucket/prefix",
        "s3://bucket/prefix?endpont=http://127.0.0.1:9000",
        "s3://bucket/prefix?endpoint=ftp://127.0.0.1:9000",
        "s3://bucket/prefix?endpoint=http://127.0.0.1:notaport",
        "s3://bucket/prefix?endpoint=",
        "s3://bucket/prefix?region=a&region=b",
        "s3://bucket/prefix#frag",
    ],
)
def test_a_bad_evidence_url_is_refused_naming_the_setting(url: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as refused:
        evidence.store_from_settings(url, tmp_path)
    assert str(refused.value).startswith("ASKFIRST_EVIDENCE_URL=")
    assert "\n" not in str(refused.value)
    assert not any(tmp_path.iterdir())
