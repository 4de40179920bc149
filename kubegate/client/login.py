"""``kubegate login``'s two flows against a proxy's auth endpoint. The private key is made here and never
leaves this machine; the proxy signs its public key.

- browser (authorization code + PKCE): a one-shot HTTP server on 127.0.0.1 (any free port) receives the
  provider's redirect (``/callback?code=…&state=…``); the code goes to the proxy, which holds the PKCE
  verifier and nonce, checks the ID token and answers with the certificate;
- device (RFC 8628, for machines without a browser): show the verification URL and user code, poll.
"""

from __future__ import annotations

import html
import threading
import time
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import serialization

from certs.building import generate_private_key, private_key_pem
from kubegate.client.api import AuthClient, ClientError
from kubegate.client.profile import Profile

__all__ = ["browser_login", "device_login", "new_key", "profile_from_answer", "LoopbackRedirect"]


def new_key() -> tuple[bytes, str]:
    """(private key PEM, public key PEM): a fresh P-256 key pair."""
    key = generate_private_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_key_pem(key), public.decode()


class LoopbackRedirect:
    """``http://127.0.0.1:PORT/callback``: waits for the one redirect that carries the code."""

    def __init__(self) -> None:
        self.params: dict[str, str] | None = None
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                if url.path != "/callback":
                    self.send_error(404)
                    return
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                ok = "code" in params and "error" not in params
                text = ("kubegate: signed in at the provider; you can close this window." if ok else
                        f"kubegate: sign-in failed: {params.get('error_description') or params.get('error', '?')}")
                body = f"<!doctype html><title>kubegate</title><p>{html.escape(text)}</p>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if outer.params is None:
                    outer.params = params
                    outer.arrived.set()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="kubegate-loopback", daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/callback"

    def __enter__(self) -> LoopbackRedirect:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, timeout: float) -> dict[str, str]:
        if not self.arrived.wait(timeout):
            raise ClientError(f"no sign-in arrived within {timeout:.0f}s")
        assert self.params is not None
        return self.params


def browser_login(client: AuthClient, connector: str, *, open_browser: bool, out: TextIO,
                  timeout: float = 300.0) -> tuple[dict[str, Any], bytes]:
    key_pem, public_pem = new_key()
    with LoopbackRedirect() as loopback:
        start = client.post("login/start", {"connector": connector, "redirect_uri": loopback.redirect_uri,
                                            "public_key": public_pem})
        url = start["auth_url"]
        opened = open_browser and _open(url)
        print(f"{'Opened' if opened else 'Open'} this URL in a browser to sign in:\n  {url}", file=out, flush=True)
        params = loopback.wait(timeout)
    if params.get("state") != start["state"]:
        raise ClientError("the redirect carried another login's state: refusing it")
    if "error" in params:
        raise ClientError(f"sign-in failed at the provider: {params.get('error_description') or params['error']}")
    answer = client.post("login/finish", {"state": params["state"], "code": params.get("code", "")})
    return answer, key_pem


def _open(url: str) -> bool:
    try:
        return bool(webbrowser.get().open(url))
    except webbrowser.Error:
        return False


def device_login(client: AuthClient, connector: str, *, out: TextIO,
                 sleep: Callable[[float], None] = time.sleep) -> tuple[dict[str, Any], bytes]:
    key_pem, public_pem = new_key()
    start = client.post("device/start", {"connector": connector, "public_key": public_pem})
    where = start.get("verification_uri_complete") or start["verification_uri"]
    print(f"To sign in, open {where}\n  and enter the code {start['user_code']}", file=out, flush=True)
    interval = max(int(start.get("interval") or 5), 1)
    deadline = time.monotonic() + int(start.get("expires_in") or 600)
    while time.monotonic() < deadline:
        sleep(interval)
        code, answer = client.request("POST", "device/poll", {"request_id": start["request_id"]})
        if code == 200:
            return answer, key_pem
        if answer.get("status") == "slow_down":
            interval += 5
    raise ClientError("the device code expired before the sign-in finished")


def profile_from_answer(proxy: str, answer: dict[str, Any], key_pem: bytes, connector: str,
                        system_trust: bool = False) -> Profile:
    return Profile(
        proxy=proxy, user=answer["user"], roles=list(answer["roles"]), traits=dict(answer["traits"]),
        kind=answer["kind"], expires=answer["expires"], connector=connector, serial=answer["serial"],
        system_trust=system_trust,
        cert_pem=answer["certificate"].encode(), key_pem=key_pem, ca_pem=answer["ca"].encode(),
    )
