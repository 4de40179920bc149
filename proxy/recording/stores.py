"""Where recordings go: files under a directory, or an S3-compatible bucket. Blocking I/O: called only on
the recording writer thread (:mod:`proxy.recording.writer`) and by the CLI, never on the event loop.

A store opens one :class:`Sink` per session (``write`` as the session goes, ``close`` at its end) and
reads a recording back by its location (``read``), which is what the session index keeps:

* :class:`FileStore` — ``<dir>/<session id>.cast``, created exclusively (0600), appended with
  ``os.write`` as the session goes (a process killed mid-session leaves every line written so far),
  ``fsync`` at the end. Location: the file's absolute path.
* :class:`S3Store` — a multipart upload per session (boto3): bytes are buffered and sent as a part each
  time ``part_size`` (at least 5 MiB, S3's minimum for all parts but the last) is reached; the last part
  and the completion happen at the end. Location: ``s3://<bucket>/<key>``.
"""

from __future__ import annotations

import os
from typing import Any, Protocol


class RecordingStoreError(Exception):
    """A recording cannot be opened, written or read (the message says where and why)."""


class Sink(Protocol):
    location: str

    def write(self, data: bytes) -> None: ...

    def write_lines(self, lines: list[bytes]) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None:
        """Drop the recording (the session never started)."""
        ...


class RecordingStore(Protocol):
    def open(self, session_id: str) -> Sink: ...

    def read(self, location: str) -> bytes: ...


class FileSink:
    def __init__(self, path: str) -> None:
        self.location = path
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise RecordingStoreError(f"cannot create recording {path}: {exc.strerror or exc}") from exc

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise RecordingStoreError(f"recording {self.location} is closed")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise RecordingStoreError(f"cannot write recording {self.location}: {exc.strerror or exc}") from exc

    def write_lines(self, lines: list[bytes]) -> None:
        """Write the lines in order with as few system calls as the kernel allows (``writev``)."""
        if self._fd is None:
            raise RecordingStoreError(f"recording {self.location} is closed")
        pending = list(lines)
        try:
            while pending:
                batch = pending[:1024]  # IOV_MAX
                written = os.writev(self._fd, batch)
                total = sum(map(len, batch))
                if written == total:
                    del pending[: len(batch)]
                    continue
                for i, line in enumerate(batch):  # a short write: go on from where it stopped
                    if written < len(line):
                        pending[: i + 1] = [line[written:]]
                        break
                    written -= len(line)
        except OSError as exc:
            raise RecordingStoreError(f"cannot write recording {self.location}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            raise RecordingStoreError(f"cannot sync recording {self.location}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)

    def abort(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self.location)
        except OSError as exc:
            raise RecordingStoreError(f"cannot remove recording {self.location}: {exc.strerror or exc}") from exc


class FileStore:
    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)

    def open(self, session_id: str) -> FileSink:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RecordingStoreError(f"cannot create the recordings directory {self.directory}: {exc.strerror or exc}") from exc
        return FileSink(os.path.join(self.directory, f"{session_id}.cast"))

    def read(self, location: str) -> bytes:
        try:
            with open(location, "rb") as f:
                return f.read()
        except OSError as exc:
            raise RecordingStoreError(f"cannot read recording {location}: {exc.strerror or exc}") from exc


def s3_client(endpoint: str | None, region: str | None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region or "us-east-1")


class S3Sink:
    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self.location = f"s3://{bucket}/{key}"
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._buf = bytearray()
        self._parts: list[dict[str, Any]] = []
        try:
            self._upload_id: str | None = client.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType="application/x-asciicast")["UploadId"]
        except Exception as exc:  # botocore raises many kinds (connection, client, credentials)
            raise RecordingStoreError(f"cannot start the upload of {self.location}: {exc}") from exc

    def write_lines(self, lines: list[bytes]) -> None:
        for line in lines:
            self._buf += line
        self._upload_full_parts()

    def write(self, data: bytes) -> None:
        self._buf += data
        self._upload_full_parts()

    def _upload_full_parts(self) -> None:
        while len(self._buf) >= self._part_size:
            chunk = bytes(self._buf[: self._part_size])
            del self._buf[: self._part_size]
            self._upload(chunk)

    def _upload(self, chunk: bytes) -> None:
        number = len(self._parts) + 1
        try:
            answer = self._client.upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                              PartNumber=number, Body=chunk)
        except Exception as exc:
            raise RecordingStoreError(f"cannot upload part {number} of {self.location}: {exc}") from exc
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def close(self) -> None:
        if self._upload_id is None:
            return
        if self._buf or not self._parts:
            chunk = bytes(self._buf)
            self._buf.clear()
            self._upload(chunk)
        try:
            self._client.complete_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                                   MultipartUpload={"Parts": self._parts})
        except Exception as exc:
            raise RecordingStoreError(f"cannot complete the upload of {self.location}: {exc}") from exc
        self._upload_id = None

    def abort(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)
        except Exception as exc:
            raise RecordingStoreError(f"cannot abort the upload of {self.location}: {exc}") from exc


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None, region: str | None = None,
                 part_size: int = 5 * 1024 * 1024, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self._client = client or s3_client(endpoint, region)

    def open(self, session_id: str) -> S3Sink:
        return S3Sink(self._client, self.bucket, f"{self.prefix}{session_id}.cast", self.part_size)

    def read(self, location: str) -> bytes:
        if not location.startswith("s3://"):
            raise RecordingStoreError(f"{location} is not an s3:// location")
        bucket, _, key = location[5:].partition("/")
        try:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise RecordingStoreError(f"cannot read recording {location}: {exc}") from exc
