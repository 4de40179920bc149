"""``kubegate login``: sign in through a connector of a kubegate proxy and keep the certificate in
``~/.kubegate`` (``$KUBEGATE_HOME``)."""

from __future__ import annotations

import argparse
import sys

from kubegate.client.profile import Profile
from kubegate.commands.ca import CommandError, report_errors

__all__ = ["register", "sign_in"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "login",
        help="sign in (OIDC or GitHub) and get a short-lived certificate from a kubegate proxy",
        description=(
            "Sign in through one of the proxy's connectors. The browser flow opens the provider's page "
            "(or prints its URL) and receives the answer on a loopback address; --headless uses the "
            "device flow (a URL and a code to enter on any device). The private key is made here and "
            "never leaves this machine. The identity goes to ~/.kubegate (or $KUBEGATE_HOME), mode 0600."
        ),
    )
    parser.add_argument("--proxy", metavar="HOST:PORT", help="the kubegate proxy (default: the last one)")
    parser.add_argument("--auth", metavar="CONNECTOR", help="connector name (default: the only one)")
    parser.add_argument("--ca-pin", metavar="sha256:HEX",
                        help="trust the proxy's kubegate CA if its key has this pin (first sign-in)")
    parser.add_argument("--headless", action="store_true", help="device flow: no browser on this machine")
    parser.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    parser.set_defaults(func=report_errors(run_login))


def sign_in(proxy: str, connector: str | None, ca_pin: str | None, *, headless: bool, open_browser: bool) -> Profile:
    """The whole sign-in (used by ``kube credentials`` to re-prompt too); returns the saved profile.
    Messages go to stderr."""
    from kubegate.client.api import AuthClient, ClientError, fetch_pinned_ca
    from kubegate.client.login import browser_login, device_login, profile_from_answer
    from kubegate.client.profile import load_profile, save_profile

    try:
        known = load_profile(proxy)
        if ca_pin:
            ca_pem: bytes | None = fetch_pinned_ca(proxy, ca_pin)
        else:  # the CA pinned at an earlier sign-in, else the system's CAs (a public serving certificate)
            ca_pem = known.server_ca if known is not None else None
        client = AuthClient(proxy, ca_pem)
        if connector is None:
            connectors = client.get("connectors")
            if len(connectors) != 1:
                names = ", ".join(c["name"] for c in connectors) or "none"
                raise CommandError(f"choose a connector with --auth (this proxy has: {names})")
            connector = connectors[0]["name"]
        if headless:
            answer, key_pem = device_login(client, connector, out=sys.stderr)
        else:
            answer, key_pem = browser_login(client, connector, open_browser=open_browser, out=sys.stderr)
    except ClientError as exc:
        raise CommandError(str(exc)) from None
    profile = profile_from_answer(proxy, answer, key_pem, connector, system_trust=ca_pem is None)
    save_profile(profile)
    return profile


def run_login(args: argparse.Namespace) -> int:
    from kubegate.client.output import describe_profile
    from kubegate.client.profile import current_proxy

    proxy = args.proxy or current_proxy()
    if not proxy:
        raise CommandError("give --proxy HOST:PORT (no earlier login to reuse)")
    profile = sign_in(proxy, args.auth, args.ca_pin, headless=args.headless, open_browser=not args.no_browser)
    print(describe_profile(profile))
    return 0
