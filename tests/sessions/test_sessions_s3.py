"""Recordings in S3-compatible storage (``proxy.recording.s3``), against moto's S3 server started by the
test on a free loopback port: a session's cast goes up as a multipart upload, part by part while the
session runs, and is completed at its end; ``kubegate sessions export`` reads it back from the bucket."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.recording.cast import output_text, read_cast
from tests.sessions.conftest import KubegateProcess, ended_session, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from kubegate.demo import free_port

    port = free_port()
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "moto_server exited"
            try:
                urllib.request.urlopen(endpoint + "/", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                           ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_session_is_uploaded_in_parts_as_it_goes(tmp_path, moto, kubectl_new):
    import boto3

    from sandbox.testing import running_sandbox

    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    s3.create_bucket(Bucket="recordings")
    marker = uuid.uuid4().hex[:12]
    with running_sandbox(tmp_path / "sb") as sb:
        gate = KubegateProcess(tmp_path / "gate", sb, f"""  recording:
    flush_interval: 50ms
    s3: {{bucket: recordings, prefix: kube/, endpoint: '{moto}', region: us-east-1, part_size: 5MiB}}""")
        try:
            # The auditor role records non-interactive sessions: 6 MB of output, then the session waits.
            proc = subprocess.Popen(
                [kubectl_new, "--kubeconfig", str(gate.kubeconfig("carol", "auditor")), "exec", "-i", "-n", "dev",
                 "web-1", "--", "sh", "-c", f"head -c 6000000 /dev/zero | tr '\\000' x; echo; echo mark-{marker}; cat"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            received: list[bytes] = []
            reader = threading.Thread(target=lambda: received.extend(iter(lambda: proc.stdout.read(65536), b"")))
            reader.start()  # kubectl must be read from, or the output stalls in its pipe

            def one_part_up() -> bool:
                uploads = s3.list_multipart_uploads(Bucket="recordings").get("Uploads") or []
                return any(len(s3.list_parts(Bucket="recordings", Key=u["Key"], UploadId=u["UploadId"]).get("Parts") or [])
                           for u in uploads)

            wait_for(one_part_up, 60, "a part uploaded while the session runs")
            assert proc.poll() is None  # still running
            assert "Contents" not in s3.list_objects_v2(Bucket="recordings")  # not complete yet
            proc.stdin.write(b"typed at the end\n")
            proc.stdin.close()
            assert proc.wait(120) == 0, proc.stderr.read()
            reader.join(30)
            proc.stderr.close()
            assert b"".join(received).endswith(f"mark-{marker}\ntyped at the end\n".encode())
            record = ended_session(gate.sessions_dir, f"mark-{marker}", timeout=60)
        finally:
            gate.stop()
    location = f"s3://recordings/kube/{record['session_id']}.cast"
    assert record["recording"] == location and "recording_error" not in record
    (obj,) = s3.list_objects_v2(Bucket="recordings")["Contents"]
    assert obj["Key"] == f"kube/{record['session_id']}.cast"
    body = s3.get_object(Bucket="recordings", Key=obj["Key"])["Body"].read()
    header, events = read_cast(body)
    assert header["kubegate"]["user"] == "carol"
    assert output_text(events) == "x" * 6_000_000 + f"\nmark-{marker}\ntyped at the end\n"
    exported = gate.cli("sessions", "export", record["session_id"])
    assert exported.returncode == 0 and exported.stdout == body


def test_an_aborted_s3_recording_leaves_no_upload_and_no_object(moto):
    import boto3

    from proxy.recording.stores import S3Store

    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    s3.create_bucket(Bucket="aborted")
    store = S3Store("aborted", "p/", moto, "us-east-1")
    sink = store.open("f" * 32)
    sink.write_lines([b'{"version": 2}\n'])
    assert s3.list_multipart_uploads(Bucket="aborted").get("Uploads")
    sink.abort()
    assert not s3.list_multipart_uploads(Bucket="aborted").get("Uploads")
    assert "Contents" not in s3.list_objects_v2(Bucket="aborted")
