"""The kubegate identity extension carried by user and bot certificates (DESIGN §3).

OID arc
    kubegate uses the arc ``1.3.6.1.4.1.32473.5723`` — a sub-arc of IANA Private Enterprise Number
    32473, which RFC 5612 reserves for documentation and examples. kubegate has no PEN of its own; when
    it gets one, only ``KUBEGATE_OID_ARC`` changes. (A UUID arc, ``2.25.<uuid>``, would need no
    registration, but Go's ``crypto/x509`` — hence kubectl — refuses certificates whose OID components
    exceed 63 bits: "x509: malformed extension OID field".) Arcs under it:

    - ``<arc>.1`` — identity extension (this module), non-critical.

Value
    The extension's ``extnValue`` is the DER encoding of an ASN.1 ``UTF8String`` whose text is a JSON
    object (compact, keys sorted)::

        {"v": 1, "kind": "user" | "bot", "cluster": "<name>" | null,
         "traits": {"<trait>": ["<value>", ...], ...}}

    ``v`` is the payload version (1). Decoding is strict about the types of these keys and ignores keys
    it does not know (so a newer issuer can add fields an older proxy skips).

The extension is non-critical: TLS stacks that do not know it (OpenSSL in the proxy, Go in kubectl when
it sees a client certificate) ignore it; kubegate reads it after the handshake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509

__all__ = [
    "KUBEGATE_OID_ARC",
    "IDENTITY_EXTENSION_OID",
    "IDENTITY_PAYLOAD_VERSION",
    "KINDS",
    "ExtensionPayload",
    "ExtensionError",
    "encode_identity_extension",
    "decode_identity_extension",
]

KUBEGATE_OID_ARC = "1.3.6.1.4.1.32473.5723"
IDENTITY_EXTENSION_OID = x509.ObjectIdentifier(f"{KUBEGATE_OID_ARC}.1")
IDENTITY_PAYLOAD_VERSION = 1
KINDS = ("user", "bot")

_UTF8STRING_TAG = 0x0C


class ExtensionError(ValueError):
    """The kubegate extension is present but malformed; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class ExtensionPayload:
    traits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    cluster: str | None = None
    kind: str = "user"


def normalize_traits(traits: Mapping[str, Sequence[str] | str] | None) -> dict[str, tuple[str, ...]]:
    """``{"k": "a"}`` or ``{"k": ["a", "b"]}`` → ``{"k": ("a",)}`` / ``{"k": ("a", "b")}``, validated."""
    result: dict[str, tuple[str, ...]] = {}
    for key, values in (traits or {}).items():
        if not isinstance(key, str) or not key:
            raise ExtensionError(f"trait names must be non-empty strings, got {key!r}")
        seq = (values,) if isinstance(values, str) else tuple(values)
        for value in seq:
            if not isinstance(value, str):
                raise ExtensionError(f"trait {key!r}: values must be strings, got {value!r}")
        result[key] = seq
    return result


def encode_identity_extension(payload: ExtensionPayload) -> x509.UnrecognizedExtension:
    """The ``x509.UnrecognizedExtension`` to add (non-critical) to a certificate builder."""
    if payload.kind not in KINDS:
        raise ExtensionError(f"kind must be one of {', '.join(KINDS)}, got {payload.kind!r}")
    if payload.cluster is not None and (not isinstance(payload.cluster, str) or not payload.cluster):
        raise ExtensionError(f"cluster must be a non-empty string or null, got {payload.cluster!r}")
    document = {
        "v": IDENTITY_PAYLOAD_VERSION,
        "kind": payload.kind,
        "cluster": payload.cluster,
        "traits": {key: list(values) for key, values in normalize_traits(payload.traits).items()},
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return x509.UnrecognizedExtension(IDENTITY_EXTENSION_OID, _der_utf8string(text))


def decode_identity_extension(value: bytes) -> ExtensionPayload:
    """Parse the extension's ``extnValue`` bytes; raises ``ExtensionError`` naming the problem."""
    text = _parse_der_utf8string(value)
    try:
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ExtensionError(f"kubegate extension payload is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ExtensionError("kubegate extension payload must be a JSON object")
    version = document.get("v", IDENTITY_PAYLOAD_VERSION)
    if version != IDENTITY_PAYLOAD_VERSION:
        raise ExtensionError(f"kubegate extension payload version {version!r} is not supported (want 1)")
    kind = document.get("kind", "user")
    if kind not in KINDS:
        raise ExtensionError(f"kubegate extension 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    cluster = document.get("cluster")
    if cluster is not None and (not isinstance(cluster, str) or not cluster):
        raise ExtensionError(
            f"kubegate extension 'cluster' must be a non-empty string or null, got {cluster!r}"
        )
    raw_traits = document.get("traits", {})
    if not isinstance(raw_traits, dict):
        raise ExtensionError("kubegate extension 'traits' must be an object of string lists")
    traits: dict[str, tuple[str, ...]] = {}
    for key, values in raw_traits.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ExtensionError(f"kubegate extension trait {key!r} must be a list of strings")
        if not key:
            raise ExtensionError("kubegate extension trait names must be non-empty")
        traits[key] = tuple(values)
    return ExtensionPayload(traits=traits, cluster=cluster, kind=kind)


def _der_utf8string(data: bytes) -> bytes:
    length = len(data)
    if length < 0x80:
        header = bytes([_UTF8STRING_TAG, length])
    else:
        size = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([_UTF8STRING_TAG, 0x80 | len(size)]) + size
    return header + data


def _parse_der_utf8string(value: bytes) -> bytes:
    if len(value) < 2 or value[0] != _UTF8STRING_TAG:
        raise ExtensionError("kubegate extension value must be a DER UTF8String")
    first = value[1]
    if first < 0x80:
        length, offset = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(value) < 2 + count:
            raise ExtensionError("kubegate extension value has a bad DER length")
        length = int.from_bytes(value[2 : 2 + count], "big")
        offset = 2 + count
        if length < 0x80 or value[2] == 0:
            raise ExtensionError("kubegate extension value has a non-minimal DER length")
    if len(value) != offset + length:
        raise ExtensionError(
            f"kubegate extension value length mismatch: header says {length} bytes, {len(value) - offset} present"
        )
    return value[offset:]
