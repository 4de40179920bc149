"""Bots join a kubegate over its auth endpoint with a one-time token and a CA pin, renew with their own
certificate, and stop renewing once removed — with no CA key on the bot's side. Against a real
`kubegate start` process and a sandbox cluster; kubectl 1.37 and 1.20 use what the bot wrote."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.sso.conftest import running_gate, status_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gate(module_sandbox, tmp_path_factory):
    with running_gate(tmp_path_factory.mktemp("bots"), module_sandbox) as running:
        yield running


def add_bot(gate, name: str, *extra: str) -> dict:
    result = gate.kubegate("bots", "add", name, "--roles", "admin", "-c", "kubegate.yaml", "--format", "json", *extra)
    assert result.returncode == 0, status_of(result)
    return json.loads(result.stdout)


def bot_start(gate, dest: Path, token: str, pin: str) -> subprocess.CompletedProcess[str]:
    return gate.kubegate("bot", "start", "--proxy", gate.proxy, "--token", token, "--ca-pin", pin,
                         "--dest", str(dest), "--once")


def test_bot_joins_renews_and_is_refused_once_removed(gate, tmp_path, kubectl_new, kubectl_old):
    from kubegate.client.api import ClientError
    from kubegate.client.bot import remote_bot_step

    added = add_bot(gate, "ci")
    assert added["ca_pin"] == gate.pin and added["user"] == "bot-ci"
    before = len(gate.issued())
    dest = tmp_path / "ci"
    joined = bot_start(gate, dest, added["token"], added["ca_pin"])
    assert joined.returncode == 0, status_of(joined)
    assert "issued (joined)" in joined.stdout
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        "ca.crt", "identity.pem", "kubeconfig", "kubeconfig-exec", "tls.crt", "tls.key"]
    assert stat.S_IMODE(os.stat(dest / "identity.pem").st_mode) == 0o600
    kubeconfig = yaml.safe_load((dest / "kubeconfig").read_text())
    assert sorted(c["name"] for c in kubeconfig["contexts"]) == ["prod", "sandbox"]
    records = gate.issued()[before:]
    assert [(r.user, r.kind, r.via) for r in records] == [("bot-ci", "bot", "join")]
    assert 3500 <= records[0].not_after - records[0].issued_at <= 3600  # bots: 1 h

    for kubectl in (kubectl_new, kubectl_old):
        pods = subprocess.run([kubectl, "--kubeconfig", str(dest / "kubeconfig"), "--context", "sandbox", "get",
                               "pods", "-A"], capture_output=True, text=True, timeout=60)
        assert pods.returncode == 0, pods.stderr
        assert pods.stdout.split()[:2] == ["NAMESPACE", "NAME"]

    # Renewal over mutual TLS with the bot's own certificate, once two thirds of its life have passed.
    renewed = remote_bot_step(gate.proxy, dest, token=None, ca_pin=None, clock=lambda: time.time() + 45 * 60)
    assert renewed.renewed and renewed.reason == "renewal due" and renewed.serial != records[0].serial
    assert [(r.user, r.via, r.serial) for r in gate.issued()[before + 1:]] == [("bot-ci", "renew", renewed.serial)]
    pods = subprocess.run([kubectl_new, "--kubeconfig", str(dest / "kubeconfig-exec"), "--context", "sandbox",
                           "get", "pods", "-A"], capture_output=True, text=True, timeout=60)
    assert pods.returncode == 0, pods.stderr

    removed = gate.kubegate("bots", "rm", "ci", "-c", "kubegate.yaml")
    assert removed.returncode == 0, status_of(removed)
    count = len(gate.issued())
    with pytest.raises(ClientError) as refused:
        remote_bot_step(gate.proxy, dest, token=None, ca_pin=None, clock=lambda: time.time() + 45 * 60)
    assert refused.value.code == 403 and "bot 'ci' was removed" in str(refused.value)
    assert len(gate.issued()) == count


def test_join_token_is_single_use_and_a_wrong_pin_sends_nothing(gate, tmp_path):
    added = add_bot(gate, "runner")
    before = len(gate.issued())

    wrong = bot_start(gate, tmp_path / "a", added["token"], "sha256:" + "0" * 64)
    assert wrong.returncode == 1, status_of(wrong)
    assert "does not match the pin" in wrong.stderr
    assert len(gate.issued()) == before

    first = bot_start(gate, tmp_path / "b", added["token"], added["ca_pin"])  # the token was not spent
    assert first.returncode == 0, status_of(first)
    assert len(gate.issued()) == before + 1

    token_file = tmp_path / "token"
    token_file.write_text(added["token"] + "\n")
    again = bot_start(gate, tmp_path / "c", str(token_file), added["ca_pin"])  # a file holding the token
    assert again.returncode == 1
    assert "the join token was already used (tokens are single use)" in again.stderr
    unknown = bot_start(gate, tmp_path / "d", "not-a-token", added["ca_pin"])
    assert unknown.returncode == 1 and "unknown join token" in unknown.stderr
    assert len(gate.issued()) == before + 1


def test_an_expired_join_token_is_refused(gate, tmp_path):
    added = add_bot(gate, "late", "--token-ttl", "1s")
    time.sleep(1.2)
    before = len(gate.issued())
    late = bot_start(gate, tmp_path / "late", added["token"], added["ca_pin"])
    assert late.returncode == 1 and "the join token has expired" in late.stderr
    assert len(gate.issued()) == before


def test_bots_ls_lists_what_add_registered(gate):
    add_bot(gate, "lister")
    listed = gate.kubegate("bots", "ls", "-c", "kubegate.yaml", "--format", "json")
    assert listed.returncode == 0, status_of(listed)
    assert {"name": "lister", "roles": ["admin"]}.items() <= next(
        b for b in json.loads(listed.stdout) if b["name"] == "lister").items()


def test_a_running_bot_stops_when_it_is_removed(gate, tmp_path):
    """The renewal loop of `bot start --proxy`: joined, then — once the operator removed the bot — its
    next renewal is refused and the loop ends with the proxy's reason (no retrying forever)."""
    from certs.bot import BotError
    from kubegate.client.bot import run_remote_bot

    added = add_bot(gate, "looper")
    now = [time.time()]
    results = []

    def wait(seconds: float) -> bool:
        if len(results) == 1:
            removed = gate.kubegate("bots", "rm", "looper", "-c", "kubegate.yaml")
            assert removed.returncode == 0, status_of(removed)
        now[0] += seconds + 1  # the renewal is due when the loop wakes up
        return False

    with pytest.raises(BotError, match="bot 'looper' was removed: its certificates are not renewed"):
        run_remote_bot(gate.proxy, tmp_path / "looper", token=added["token"], ca_pin=added["ca_pin"], wait=wait,
                       on_result=results.append, clock=lambda: now[0])
    assert [r.reason for r in results] == ["joined"]
