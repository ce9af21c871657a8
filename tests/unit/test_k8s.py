"""API server access honours NO_PROXY (the kubernetes client drops it), and a pod's rotated
service account token is read again."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest


def test_no_proxy_is_kept_when_a_proxy_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client
    from kubernetes.client.rest import RESTClientObject

    from olivekube.kube import _with_no_proxy_and_pool

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,.svc")
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    fixed = _with_no_proxy_and_pool(configuration)
    assert fixed.no_proxy == "127.0.0.1,.svc"
    pool = RESTClientObject(fixed).pool_manager
    assert type(pool).__name__ == "PoolManager"  # not a ProxyManager: the API server is reached directly


def test_a_rotated_service_account_token_is_read_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kubernetes.config.incluster_config as incluster
    from kubernetes import client

    from olivekube.core.constants import SERVICE_ACCOUNT_DIR
    from olivekube.core.pod_paths import TEST_NODE_PATHS_ENV
    from olivekube.kube import load_config
    from olivekube.operator.handlers import login

    (tmp_path / "token").write_text("first")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv(TEST_NODE_PATHS_ENV, json.dumps({SERVICE_ACCOUNT_DIR: str(tmp_path)}))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    load_config()
    configuration = client.Configuration.get_default_copy()
    assert configuration.host == "https://10.0.0.1:6443"
    assert configuration.get_api_key_with_prefix("authorization").lower() == "bearer first"
    assert login().token == "first"

    (tmp_path / "token").write_text("rotated")
    later = datetime.datetime.now() + datetime.timedelta(minutes=2)

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Later:
            return cls.fromtimestamp(later.timestamp(), tz)

    monkeypatch.setattr(incluster.datetime, "datetime", Later)
    assert configuration.get_api_key_with_prefix("authorization").lower() == "bearer rotated"
    assert login().token == "rotated"  # kopf logs in again after a 401
