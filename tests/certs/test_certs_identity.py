"""Reading the identity back out of a certificate: round trip, no extension, malformed extension."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from certs.ca import CertificateAuthority, generate_private_key
from certs.extension import (
    IDENTITY_EXTENSION_OID,
    ExtensionError,
    ExtensionPayload,
    decode_identity_extension,
    encode_identity_extension,
)
from certs.identity import IdentityError, from_der, from_pem, identity_from_certificate
from rbac.identity import Identity


def test_round_trip_user(ca: CertificateAuthority) -> None:
    issued = ca.issue_user_certificate(
        "alice",
        ["dev-access", "viewer"],
        timedelta(hours=8),
        traits={"kubernetes_groups": ["a", "b"], "logins": "root"},
        cluster="prod-eu",
    )
    identity = identity_from_certificate(issued.certificate)
    assert identity == Identity(
        user="alice",
        roles=("dev-access", "viewer"),
        traits={"kubernetes_groups": ("a", "b"), "logins": ("root",)},
        pinned_cluster="prod-eu",
        kind="user",
        serial=issued.serial,
        not_after=issued.not_after,
    )
    assert identity.not_after is not None and identity.not_after.tzinfo is not None


def test_round_trip_bot_from_der_and_pem(ca: CertificateAuthority) -> None:
    issued = ca.issue_user_certificate("ci", ["deployer"], timedelta(hours=1), kind="bot")
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    assert from_der(der) == from_pem(issued.cert_pem)
    assert from_der(der).kind == "bot"
    assert from_der(der).pinned_cluster is None
    assert from_der(der).traits == {}


def test_unicode_and_long_payload_survive(ca: CertificateAuthority) -> None:
    groups = [f"group-{i}-é" for i in range(200)]  # > 127 bytes: long-form DER length
    issued = ca.issue_user_certificate(
        "zoë", ["viewer"], timedelta(hours=1), traits={"kubernetes_groups": groups}
    )
    identity = identity_from_certificate(issued.certificate)
    assert identity.user == "zoë"
    assert identity.traits["kubernetes_groups"] == tuple(groups)


def _plain_certificate(
    ca: CertificateAuthority, subject: x509.Name, extension: bytes | None = None
) -> x509.Certificate:
    key = generate_private_key()
    now = ca.certificate.not_valid_before_utc + timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(0x0ABC)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(hours=1))
    )
    if extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(IDENTITY_EXTENSION_OID, extension), critical=False
        )
    return builder.sign(ca.private_key, hashes.SHA256())


def test_certificate_without_extension_is_still_an_identity(ca: CertificateAuthority) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "bob"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "viewer"),
        ]
    )
    identity = identity_from_certificate(_plain_certificate(ca, subject))
    assert identity.user == "bob"
    assert identity.roles == ("viewer",)
    assert identity.traits == {} and identity.pinned_cluster is None and identity.kind == "user"
    assert identity.serial == "abc"


def _utf8(text: bytes) -> bytes:
    return bytes([0x0C, len(text)]) + text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x04\x02{}", "DER UTF8String"),
        (_utf8(b"not json"), "not valid JSON"),
        (_utf8(b"[1,2]"), "must be a JSON object"),
        (_utf8(b'{"kind":"robot"}'), "'kind' must be one of"),
        (_utf8(b'{"traits":{"g":"a"}}'), "trait 'g' must be a list of strings"),
        (_utf8(b'{"traits":[]}'), "'traits' must be an object"),
        (_utf8(b'{"cluster":""}'), "'cluster' must be a non-empty string"),
        (_utf8(b'{"v":2}'), "version 2 is not supported"),
        (_utf8(b'{"kind":"user"}') + b"x", "length mismatch"),
    ],
)
def test_malformed_extension_is_a_clear_error(ca: CertificateAuthority, value: bytes, message: str) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eve")])
    with pytest.raises(IdentityError, match=message) as info:
        identity_from_certificate(_plain_certificate(ca, subject, value))
    assert "malformed kubegate identity extension" in str(info.value)


def test_unknown_payload_keys_are_ignored() -> None:
    payload = decode_identity_extension(_utf8(b'{"v":1,"kind":"bot","future":{"x":1}}'))
    assert payload.kind == "bot"


def test_subject_without_exactly_one_cn_is_refused(ca: CertificateAuthority) -> None:
    no_cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "viewer")])
    with pytest.raises(IdentityError, match="exactly one CN"):
        identity_from_certificate(_plain_certificate(ca, no_cn))
    two = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "a"), x509.NameAttribute(NameOID.COMMON_NAME, "b")]
    )
    with pytest.raises(IdentityError, match="exactly one CN"):
        identity_from_certificate(_plain_certificate(ca, two))


def test_garbage_bytes_are_an_identity_error() -> None:
    with pytest.raises(IdentityError, match="not a DER certificate"):
        from_der(b"\x30\x03abc")
    with pytest.raises(IdentityError, match="not a PEM certificate"):
        from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


_text = st.text(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    traits=st.dictionaries(_text, st.lists(st.text(max_size=40), max_size=5), max_size=5),
    cluster=st.none() | _text,
    kind=st.sampled_from(["user", "bot"]),
)
def test_extension_round_trips_any_payload(
    traits: dict[str, list[str]], cluster: str | None, kind: str
) -> None:
    extension = encode_identity_extension(
        ExtensionPayload(traits={k: tuple(v) for k, v in traits.items()}, cluster=cluster, kind=kind)
    )
    decoded = decode_identity_extension(extension.value)
    assert decoded == ExtensionPayload(
        traits={k: tuple(v) for k, v in traits.items()}, cluster=cluster, kind=kind
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_extension_bytes_never_crash_the_decoder(value: bytes) -> None:
    try:
        decode_identity_extension(value)
    except ExtensionError:
        pass
