"""The ``etcd`` backend: etcd v3 (3.4 or newer) through its JSON gateway (``/v3/…``), with ``etcd3gw``.

Why etcd3gw: it is maintained (OpenStack) and imports with current libraries, while the gRPC ``etcd3``
package does not import with current protobuf. We use its client for every unary call (range, put, txn,
lease grant / keep-alive / revoke: its error mapping, base64 encoding and TLS session setup) and read the
watch stream ourselves over the same session: etcd3gw's ``Watcher`` runs the stream in a thread pool
and says nothing when the stream ends, and a backend must learn that its watch died (its etcd member
went away) to resume from the next revision on another member.

- ``endpoints``: ``https://10.0.0.1:2379`` …; a call that cannot reach one (connection refused, timeout,
  "no leader") is retried on the next, once each. When a member was there but did not answer (a timeout,
  or etcd saying it has no leader: the cluster is electing one, after its leader died), the round is
  tried again, 0.1 s apart, for up to ``election_wait`` seconds; then ``BackendUnavailable``. When every
  member refuses the connection (etcd is down), that comes at once.
- TLS: ``ca_file`` verifies the members, ``cert_file`` + ``key_file`` are the client certificate.
- ``prefix``: every key lives under it (``/kubegate/``), so several deployments can share one etcd.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from etcd3gw import exceptions as etcd_exceptions
from etcd3gw.client import Etcd3Client

from backend.base import Backend, BackendError, BackendUnavailable, Compacted, Event, Item, Watch, prefix_end

log = logging.getLogger(__name__)

API_PATH = "/v3/"  # etcd >= 3.4; set explicitly so that no /version round trip precedes the first call
# What etcd answers while it has no leader (a member went away and the others are electing one).
_ELECTING = ("no leader", "leader changed", "request timed out")


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text or "")


class EtcdBackend(Backend):
    name = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = "/kubegate/",
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        timeout: float = 2.0,
        election_wait: float = 5.0,
    ) -> None:
        if not endpoints:
            raise BackendError("backend.endpoints: at least one etcd endpoint is needed")
        self.endpoints = [self._parse_endpoint(e) for e in endpoints]
        self.prefix = prefix
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.timeout = timeout
        self.election_wait = election_wait
        self._local = threading.local()  # one requests session per thread and endpoint
        self._preferred = 0  # index of the endpoint that answered last

    @staticmethod
    def _parse_endpoint(endpoint: str) -> tuple[str, str, int]:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
            raise BackendError(f"backend.endpoints: {endpoint!r} is not http(s)://host:port")
        return parts.scheme, parts.hostname, parts.port

    # ---- plumbing -----------------------------------------------------------------------------------

    def _clients(self) -> list[Etcd3Client]:
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = [self._client(scheme, host, port) for scheme, host, port in self.endpoints]
            self._local.clients = clients
        return clients

    def _client(self, scheme: str, host: str, port: int, timeout: float | None = None) -> Etcd3Client:
        # Our own session: with trust_env on, requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override
        # the session's CA (so etcd's CA would be ignored), and HTTP(S)_PROXY would route etcd traffic.
        session = requests.Session()
        session.trust_env = False
        if self.ca_file is not None:
            session.verify = self.ca_file
        if self.cert_file is not None and self.key_file is not None:
            session.cert = (self.cert_file, self.key_file)
        return Etcd3Client(host=host, port=port, protocol=scheme, session=session,
                           timeout=self.timeout if timeout is None else timeout, api_path=API_PATH)

    def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        deadline: float | None = None
        while True:
            clients = self._clients()
            start = self._preferred
            last: Exception | None = None
            electing = False  # a member was there but did not answer: the cluster may be electing a leader
            for step in range(len(clients)):
                index = (start + step) % len(clients)
                client = clients[index]
                try:
                    result = client.post(client.get_url(path), json=payload)
                except etcd_exceptions.ConnectionTimeoutError as exc:
                    last, electing = exc, True
                    continue
                except etcd_exceptions.ConnectionFailedError as exc:
                    last = exc
                    continue
                except etcd_exceptions.Etcd3Exception as exc:
                    detail = str(exc.detail_text or exc)
                    if any(text in detail for text in _ELECTING):
                        last, electing = exc, True
                        continue
                    raise BackendError(f"etcd {path}: {detail}") from None
                self._preferred = index
                return result
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.election_wait
            if not electing or now >= deadline:
                reason = str(getattr(last, "detail_text", None) or last) or type(last).__name__
                raise BackendUnavailable(f"no etcd endpoint answered ({', '.join(self.describe_endpoints())}): "
                                         f"{reason}")
            time.sleep(0.1)

    def close(self) -> None:
        for client in getattr(self._local, "clients", None) or []:
            client.session.close()
        self._local.clients = None

    def describe_endpoints(self) -> list[str]:
        return [f"{scheme}://{host}:{port}" for scheme, host, port in self.endpoints]

    def _item(self, kv: dict[str, Any]) -> Item:
        key = _unb64(kv["key"]).decode()
        return Item(key=key[len(self.prefix):], value=_unb64(kv.get("value", "")),
                    revision=int(kv.get("mod_revision", 0)), lease=int(kv.get("lease", 0)))

    # ---- key-value ----------------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        result = self._call("kv/range", {"key": _b64(self.prefix + key)})
        kvs = result.get("kvs") or []
        return self._item(kvs[0]) if kvs else None

    def get_range(self, prefix: str) -> tuple[list[Item], int]:
        full = self.prefix + prefix
        result = self._call("kv/range", {"key": _b64(full), "range_end": _b64(prefix_end(full).encode("latin-1")),
                                         "sort_order": "ASCEND", "sort_target": "KEY"})
        return [self._item(kv) for kv in result.get("kvs") or []], int(result["header"]["revision"])

    def put(self, key: str, value: bytes, *, lease: int = 0) -> Item:
        payload: dict[str, Any] = {"key": _b64(self.prefix + key), "value": _b64(value)}
        if lease:
            payload["lease"] = str(lease)
        result = self._call("kv/put", payload)
        return Item(key, value, int(result["header"]["revision"]), lease)

    def compare_and_swap(self, key: str, expected_revision: int, value: bytes, *, lease: int = 0) -> Item | None:
        full = _b64(self.prefix + key)
        put: dict[str, Any] = {"key": full, "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        result = self._call("kv/txn", {"compare": [self._same_revision(full, expected_revision)],
                                       "success": [{"request_put": put}], "failure": []})
        if not result.get("succeeded"):
            return None
        return Item(key, value, int(result["header"]["revision"]), lease)

    @staticmethod
    def _same_revision(full_key: str, revision: int) -> dict[str, Any]:
        if revision == 0:
            return {"key": full_key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
        return {"key": full_key, "result": "EQUAL", "target": "MOD", "mod_revision": str(revision)}

    def delete(self, key: str, expected_revision: int | None = None) -> bool:
        full = _b64(self.prefix + key)
        if expected_revision is None:
            result = self._call("kv/deleterange", {"key": full})
            return int(result.get("deleted", 0)) > 0
        result = self._call("kv/txn", {"compare": [self._same_revision(full, expected_revision)],
                                       "success": [{"request_delete_range": {"key": full}}], "failure": []})
        if not result.get("succeeded"):
            return False
        responses = result.get("responses") or [{}]
        return int(responses[0].get("response_delete_range", {}).get("deleted", 0)) > 0

    # ---- leases -------------------------------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        result = self._call("lease/grant", {"TTL": str(max(1, int(-(-ttl // 1)))), "ID": "0"})
        if result.get("error"):
            raise BackendError(f"etcd lease grant: {result['error']}")
        return int(result["ID"])

    def keep_alive(self, lease: int) -> bool:
        result = self._call("lease/keepalive", {"ID": str(lease)})
        return int((result.get("result") or {}).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> None:
        try:
            self._call("kv/lease/revoke", {"ID": str(lease)})
        except BackendError as exc:
            if "requested lease not found" not in str(exc):
                raise

    # ---- watch --------------------------------------------------------------------------------------

    def watch(
        self,
        prefix: str,
        start_revision: int,
        on_events: Callable[[Sequence[Event]], None],
        on_error: Callable[[BaseException], None],
    ) -> Watch:
        watch = _EtcdWatch(self, prefix, start_revision, on_events, on_error)
        watch.start()
        return watch


class _EtcdWatch(Watch):
    """One streaming ``POST /v3/watch`` on the endpoint that answers first, read line by line."""

    def __init__(self, backend: EtcdBackend, prefix: str, start_revision: int,
                 on_events: Callable[[Sequence[Event]], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self.backend = backend
        self.full_prefix = backend.prefix + prefix
        self.start_revision = start_revision
        self.on_events, self.on_error = on_events, on_error
        self._cancelled = threading.Event()
        self._response: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch:{prefix}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancelled.set()
        response = self._response
        if response is not None:
            # wake the reader blocked in recv() (the same trick as etcd3gw's Watcher.stop)
            with contextlib.suppress(Exception):
                sock = socket.fromfd(response.raw._fp.fileno(), socket.AF_INET, socket.SOCK_STREAM)
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with contextlib.suppress(Exception):
                response.close()

    def _open(self) -> requests.Response:
        backend = self.backend
        request = {"create_request": {
            "key": _b64(self.full_prefix),
            "range_end": _b64(prefix_end(self.full_prefix).encode("latin-1")),
            "start_revision": str(self.start_revision + 1),
        }}
        last: Exception | None = None
        count = len(backend.endpoints)
        for step in range(count):
            scheme, host, port = backend.endpoints[(backend._preferred + step) % count]
            client = backend._client(scheme, host, port)
            try:
                response = client.session.post(client.get_url("watch"), json=request, stream=True,
                                               timeout=(backend.timeout, None))
            except requests.RequestException as exc:
                last = exc
                continue
            if response.status_code != 200:
                last = BackendUnavailable(f"etcd watch on {host}:{port}: HTTP {response.status_code}")
                response.close()
                continue
            return response
        raise BackendUnavailable(f"no etcd endpoint accepted a watch: {last}")

    def _run(self) -> None:
        try:
            self._response = self._open()
            if self._cancelled.is_set():
                self._response.close()
                return
            for line in self._response.iter_lines(chunk_size=None):
                if self._cancelled.is_set():
                    return
                if line.strip():
                    self._handle(json.loads(line))
            raise BackendUnavailable("the etcd watch stream ended")
        except BaseException as exc:  # noqa: BLE001 - every ending is reported once
            if not self._cancelled.is_set():
                if isinstance(exc, (requests.RequestException, OSError, ValueError)):
                    exc = BackendUnavailable(f"etcd watch: {exc}")
                self.on_error(exc)

    def _handle(self, message: dict[str, Any]) -> None:
        if "error" in message:
            raise BackendUnavailable(f"etcd watch: {message['error'].get('message', message['error'])}")
        result = message.get("result") or {}
        compact = int(result.get("compact_revision", 0))
        if compact:
            raise Compacted(f"etcd watch: revision {self.start_revision + 1} was compacted (now {compact})",
                            compact)
        if result.get("canceled"):
            raise BackendUnavailable(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
        events = []
        for raw in result.get("events") or []:
            kv = raw["kv"]
            revision = int(kv.get("mod_revision", 0))
            if raw.get("type") == "DELETE":
                key = _unb64(kv["key"]).decode()[len(self.backend.prefix):]
                events.append(Event("delete", key, revision, None))
            else:
                item = self.backend._item(kv)
                events.append(Event("put", item.key, revision, item))
        if events:
            self.start_revision = events[-1].revision
            self.on_events(events)
