from __future__ import annotations

import itertools

import pytest

from backend.testing import EtcdCluster

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory):
    """One real 3-member etcd cluster on loopback per test module (Debian's etcd 3.4 from .tools/bin)."""
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), members=3) as cluster:
        yield cluster


@pytest.fixture
def etcd_prefix():
    """A key prefix of this test's own, so tests sharing the module's cluster never see each other's keys."""
    return f"/kubegate-test-{next(_prefixes)}/"
