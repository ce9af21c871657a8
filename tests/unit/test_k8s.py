"""API server access honours NO_PROXY (the kubernetes client drops it)."""

from __future__ import annotations

import pytest


def test_no_proxy_is_kept_when_a_proxy_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client
    from kubernetes.client.rest import RESTClientObject

    from olivekube.kube import _with_no_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,.svc")
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    fixed = _with_no_proxy(configuration)
    assert fixed.no_proxy == "127.0.0.1,.svc"
    pool = RESTClientObject(fixed).pool_manager
    assert type(pool).__name__ == "PoolManager"  # not a ProxyManager: the API server is reached directly
