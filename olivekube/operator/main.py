"""`olivekube operator`: run the kopf operator with its metrics and liveness endpoints."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import kopf
from prometheus_client import start_http_server

from olivekube.kube import load_config
from olivekube.operator import handlers
from olivekube.operator.jobs import OperatorSettings
from olivekube.operator.reconcile import Reconciler


def run_operator(
    namespaces: list[str],
    settings: OperatorSettings,
    metrics_port: int,
    liveness_port: int,
    peering: str | None,
    retry_backoff: float,
    peering_lifetime: int = 60,
) -> None:
    """Block running the operator (cluster-wide when `namespaces` is empty).

    With `peering`, replicas take a random peering priority each: kopf pauses every operator that
    sees a live peer of higher priority and, on a tie, all of them, so equal priorities would leave
    no replica working. The highest runs; when it dies, the next takes over once its keep-alive
    (`peering_lifetime` seconds) runs out, and decides from the cluster as it is (no duplicate Job)."""
    logging.basicConfig(
        level=getattr(logging, os.environ.get("OLIVEKUBE_LOG_LEVEL", "INFO")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    load_config()
    handlers.STATE["reconciler"] = Reconciler(settings, retry_backoff=retry_backoff)
    if metrics_port:
        start_http_server(metrics_port)
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=peering is None,
            peering_name=peering,
            priority=secrets.randbelow(2**31) if peering else None,
            memo=kopf.Memo(peering_lifetime=peering_lifetime),
            stop_flag=handlers.STOP_FLAG,
            liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
        )
    )
