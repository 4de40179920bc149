"""Machine identities: a bot keeps a short-lived certificate and kubeconfigs fresh, across restarts."""

from __future__ import annotations

import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from certs.bot import BotError, BotFiles, bot_credentials, renew_if_due, run_bot
from certs.ca import CertificateAuthority
from certs.identity import from_pem
from rbac.identity import Identity

TTL = timedelta(hours=1)
RENEW = timedelta(minutes=20)


def clusters_for(identity: Identity) -> list[str]:
    return ["prod", "dev"] if "deployer" in identity.roles else []


def step(ca: CertificateAuthority, dest: Path, clock, roles=("deployer",), **kw):
    return renew_if_due(
        "ci", list(roles), dest, TTL, RENEW, ca, clusters_for, clock, server_url="gate:3026", **kw
    )


@pytest.fixture
def bot_ca(tmp_path: Path, clock) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)[0]


def test_first_step_writes_every_file_private(bot_ca: CertificateAuthority, tmp_path: Path, clock) -> None:
    dest = tmp_path / "bot"
    result = step(bot_ca, dest, clock)
    assert result.renewed and result.reason == "no usable certificate in the destination"
    files = BotFiles(dest)
    for path in (files.identity, files.cert, files.key, files.ca, files.kubeconfig, files.kubeconfig_exec):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    identity = from_pem(files.cert.read_bytes())
    assert (identity.user, identity.roles, identity.kind) == ("bot-ci", ("deployer",), "bot")
    assert result.clusters == ("dev", "prod")
    assert result.next_due == clock.now + RENEW.total_seconds()
    kubeconfig = yaml.safe_load(files.kubeconfig.read_text())
    assert [c["name"] for c in kubeconfig["contexts"]] == ["dev", "prod"]
    assert kubeconfig["users"][0]["user"]["client-certificate"] == str(files.identity.resolve())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://gate:3026/k8s/clusters/dev"
    exec_entry = yaml.safe_load(files.kubeconfig_exec.read_text())["users"][0]["user"]["exec"]
    assert exec_entry["args"][-4:] == ["bot", "credentials", "--dest", str(dest.resolve())]
    assert exec_entry["apiVersion"] == "client.authentication.k8s.io/v1"


def test_renews_only_when_due_twice_in_a_row(bot_ca: CertificateAuthority, tmp_path: Path, clock) -> None:
    dest = tmp_path / "bot"
    first = step(bot_ca, dest, clock)
    clock.advance(RENEW.total_seconds() - 1)
    kept = step(bot_ca, dest, clock)
    assert not kept.renewed and kept.serial == first.serial
    clock.advance(1)
    second = step(bot_ca, dest, clock)
    assert second.renewed and second.reason == "renewal due" and second.serial != first.serial
    clock.advance(RENEW.total_seconds())
    third = step(bot_ca, dest, clock)
    assert third.renewed and third.serial not in (first.serial, second.serial)
    assert from_pem(BotFiles(dest).cert.read_bytes()).serial == third.serial
    assert bot_credentials(dest, clock)["status"]["clientCertificateData"] == BotFiles(dest).cert.read_text()


def test_restart_keeps_a_certificate_that_is_not_due(
    bot_ca: CertificateAuthority, tmp_path: Path, clock
) -> None:
    dest = tmp_path / "bot"
    first = step(bot_ca, dest, clock)
    clock.advance(600)
    reloaded = CertificateAuthority.load(tmp_path / "ca", clock=clock)  # a new process
    again = step(reloaded, dest, clock)
    assert not again.renewed and again.serial == first.serial
    assert again.next_due == first.next_due


def test_changed_roles_or_foreign_ca_force_a_new_certificate(
    bot_ca: CertificateAuthority, tmp_path: Path, clock
) -> None:
    dest = tmp_path / "bot"
    step(bot_ca, dest, clock)
    changed = step(bot_ca, dest, clock, roles=("deployer", "viewer"))
    assert changed.renewed and changed.reason.startswith("roles changed")
    other = CertificateAuthority.load_or_create(tmp_path / "other", clock=clock)[0]
    moved = step(other, dest, clock, roles=("deployer", "viewer"))
    assert moved.renewed and moved.reason == "the certificate is not from this CA"
    assert BotFiles(dest).ca.read_bytes() == other.cert_pem


def test_broken_identity_file_is_replaced(bot_ca: CertificateAuthority, tmp_path: Path, clock) -> None:
    dest = tmp_path / "bot"
    step(bot_ca, dest, clock)
    BotFiles(dest).identity.write_text("garbage")
    assert step(bot_ca, dest, clock).renewed


def test_renew_must_be_shorter_than_ttl(bot_ca: CertificateAuthority, tmp_path: Path, clock) -> None:
    with pytest.raises(BotError, match="shorter than the ttl"):
        renew_if_due("ci", ["r"], tmp_path, TTL, TTL, bot_ca, clusters_for, clock, server_url="h:1")


def test_run_loop_renews_on_schedule_and_stops(bot_ca: CertificateAuthority, tmp_path: Path, clock) -> None:
    waits: list[float] = []
    results = []

    def wait(seconds: float) -> bool:  # the injected sleep: advance the fake clock instead
        waits.append(seconds)
        clock.advance(seconds)
        return len(waits) >= 3

    run_bot(
        "ci",
        ["deployer"],
        tmp_path / "bot",
        TTL,
        RENEW,
        bot_ca,
        clusters_for,
        clock,
        server_url="h:1",
        wait=wait,
        on_result=results.append,
    )
    assert [r.renewed for r in results] == [True, True, True]
    assert len({r.serial for r in results}) == 3
    assert waits == [RENEW.total_seconds()] * 3


def test_one_bot_per_directory(bot_ca: CertificateAuthority, tmp_path: Path, clock) -> None:
    dest = tmp_path / "bot"
    seen: list[str] = []

    def nested(_result) -> None:
        with pytest.raises(BotError, match="another bot is already running"):
            run_bot(
                "ci", ["deployer"], dest, TTL, RENEW, bot_ca, clusters_for, clock, server_url="h:1", once=True
            )
        seen.append("checked")

    run_bot(
        "ci",
        ["deployer"],
        dest,
        TTL,
        RENEW,
        bot_ca,
        clusters_for,
        clock,
        server_url="h:1",
        once=True,
        on_result=nested,
    )
    assert seen == ["checked"]


def test_exec_credential_shape_and_expiry(bot_ca: CertificateAuthority, tmp_path: Path, clock) -> None:
    dest = tmp_path / "bot"
    result = step(bot_ca, dest, clock)
    credential = bot_credentials(dest, clock)
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    assert credential["kind"] == "ExecCredential"
    status = credential["status"]
    cert = x509.load_pem_x509_certificate(status["clientCertificateData"].encode())
    assert format(cert.serial_number, "x") == result.serial
    assert "PRIVATE KEY" in status["clientKeyData"]
    assert status["expirationTimestamp"] == result.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    clock.advance(TTL.total_seconds() + 1)
    with pytest.raises(BotError, match="expired"):
        bot_credentials(dest, clock)
    with pytest.raises(BotError, match="no bot certificate"):
        bot_credentials(tmp_path / "nowhere", clock)


def test_kubectl_keeps_working_across_two_renewals(
    ca: CertificateAuthority, tmp_path: Path, clock, kubectl_new: str, kubectl_old: str, mtls_server
) -> None:
    """The CA issues on the wall clock (so the TLS handshake accepts the certificates); the bot decides
    renewal on a fake clock that the test moves forward."""
    dest = tmp_path / "bot"
    server_url = f"127.0.0.1:{mtls_server.port}"
    serials = []
    for round_ in range(3):
        result = renew_if_due(
            "ci", ["deployer"], dest, TTL, RENEW, ca, clusters_for, clock, server_url=server_url
        )
        assert result.renewed
        serials.append(result.serial)
        for kubectl, kubeconfig in (
            (kubectl_new, dest / "kubeconfig-exec"),
            (kubectl_new, dest / "kubeconfig"),
            (kubectl_old, dest / "kubeconfig"),
        ):
            done = subprocess.run(
                [kubectl, "--kubeconfig", str(kubeconfig), "--context", "prod", "get", "--raw", "/version"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, (round_, kubeconfig.name, done.stderr)
        assert [i.serial for i in mtls_server.identities[-3:]] == [result.serial] * 3
        clock.now = max(clock.now, result.next_due)  # the bot's clock reaches the due time
    assert len(set(serials)) == 3
    assert {i.user for i in mtls_server.identities} == {"bot-ci"}
