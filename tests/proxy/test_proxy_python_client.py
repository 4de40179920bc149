"""The official ``kubernetes`` Python client through kubegate: list, get, watch, create/delete, exec."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api_client(px, tmp_path_factory):
    from kubernetes import client, config

    kubeconfig = px.kubeconfig("alice", ["admin"], ["sandbox"], path=tmp_path_factory.mktemp("pyc") / "kubeconfig")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        yield api


def test_list_and_get_pods(api_client):
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    names = {(p.metadata.namespace, p.metadata.name) for p in core.list_pod_for_all_namespaces().items}
    assert ("dev", "web-1") in names and ("prod", "api-0") in names
    assert core.read_namespaced_pod("web-1", "dev").metadata.name == "web-1"


def test_create_watch_delete_configmap(api_client):
    from kubernetes import client, watch

    core = client.CoreV1Api(api_client)
    name = f"py-{uuid.uuid4().hex[:8]}"
    created = core.create_namespaced_config_map("dev", {"metadata": {"name": name}, "data": {"k": "v"}})
    rv = core.list_namespaced_config_map("dev").metadata.resource_version
    core.delete_namespaced_config_map(name, "dev")
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, "dev", resource_version=created.metadata.resource_version,
                                      timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if ("DELETED", name) in seen:
            break
    assert ("DELETED", name) in seen, (seen, rv)


def test_forbidden_is_a_403_api_exception(px, tmp_path):
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    kubeconfig = px.kubeconfig("dora", ["dev"], ["sandbox"], path=tmp_path / "kubeconfig")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        with pytest.raises(ApiException) as info:
            client.CoreV1Api(api).list_namespaced_secret("prod")
    assert info.value.status == 403
    assert info.value.headers.get("x-kubegate-request-id")


def test_exec_over_websocket(api_client):
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(api_client)
    out = stream(core.connect_get_namespaced_pod_exec, "web-1", "dev", command=["echo", "from-python"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out.strip() == "from-python"
