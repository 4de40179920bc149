"""`kubegate demo` with node and oidc-provider installed also starts the demo OpenID provider and prints
the sign-in lines; following them (the browser step scripted) gets plain kubectl through."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time

import pytest

from tests.app.test_demo import _start_demo, _stop
from tests.sso.oidc import require_provider, sign_in_with_browser

pytestmark = pytest.mark.e2e


def test_the_demo_shows_sign_in_and_its_lines_work(tmp_path):
    require_provider()
    proc, lines, ready = _start_demo(tmp_path)
    try:
        assert ready.wait(90), "".join(lines)
        deadline = time.monotonic() + 30
        while not any("Press Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        text = "".join(lines)
        assert "Or sign in as a person through the demo OpenID provider" in text
        exported = next(line for line in lines if line.strip().startswith("export KUBEGATE_HOME="))
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        for assignment in shlex.split(exported)[1:]:
            name, _, value = assignment.partition("=")
            env[name] = value
        commands = [shlex.split(line) for line in lines if re.match(r"\s+\S+/(kubegate|kubectl) ", line)]
        login, ls, kube_login, kubectl = commands[-4:]
        assert login[1] == "login" and kubectl[1:] == ["get", "pods", "-A"]
        signing_in = subprocess.Popen([*login, "--no-browser"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert signing_in.stderr is not None
        url = next(m.group(0) for line in signing_in.stderr if (m := re.search(r"https?://\S+", line)))
        sign_in_with_browser(url, "alice")
        out, err = signing_in.communicate(timeout=60)
        assert signing_in.returncode == 0, err
        assert "Logged in as: alice@example.com" in out and "demo-admin, viewer" in out
        for command in (ls, kube_login, kubectl):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.split()[:2] == ["NAMESPACE", "NAME"]
    finally:
        assert _stop(proc) == 0, "".join(lines)
