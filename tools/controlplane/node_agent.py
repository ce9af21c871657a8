"""A test-only node agent: the part of a kubelet that the tests need, without containers.

It registers a Node with capacity (CPU, memory, ephemeral storage, `nvidia.com/gpu`) and labels, so
that the real kube-scheduler decides where pods go (requests, nodeSelector, affinity, taints) and
leaves those that fit nowhere Unschedulable; it runs each container's command and args as a
local process with the pod's environment (values, Secret and ConfigMap references, the downward
API fields our Jobs use), in a working folder that maps the pod's volume mounts. It reports the
pod's status (Running, then Succeeded or Failed with exit code and termination message) through
the API, and ends a pod's process when the pod is deleted.

It runs only images named as the project's own (`.../olivekube...`). An image that podman holds
(built by tools/images.sh, `localhost/olivekube/...`) runs in a real OCI container (podman with runc,
host network, see `container_command`): the pod's user, read-only root, dropped capabilities, no new
privileges, memory limit, mounts, env and termination message, and OOMKilled as a kubelet reports
it. Any other `olivekube` image runs this checkout's `olivekube` as a local process. Other pods are
marked Failed with reason ImageNotRunnable.

Processes see their mounts through OLIVEKUBE_TEST_NODE_PATHS, a JSON map of container path to local
folder (there is no mount namespace); the runner resolves container paths with it.

Cluster DNS is not here: a container of an Indexed Job's pod under a headless Service (`subdomain`)
gets its sibling pods' names as hosts entries (`subdomain_names`), and every container the names of
the cluster's Services (`service_names`), all pointing at this node: every pod runs on its host
network, so a Service whose port is its target port (the chart's metrics Service) answers there.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("node-agent")
NODE_NAME = "olivekube-test-node"
IMAGE_PATTERN = re.compile(r"(^|/)olivekube[\w.-]*(/|:|@|$)")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
VENV_BIN = Path(sys.executable).parent
STORAGE_CONF = Path.home() / ".cache/olivekube/containers/storage.conf"  # where tools/images.sh keeps images
PODMAN_ENV = {**os.environ, "CONTAINERS_STORAGE_CONF": str(STORAGE_CONF)}
PODMAN_RUN = ["podman", "run", "--runtime", "runc", "--network", "host", "--ulimit", "nofile=8192:8192"]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_path(value: str, path_map: dict[str, str]) -> str:
    """A value that names a mount point (HOME=/tmp, a workingDir) as the folder the mount maps to.
    Only the mount point itself: a longer path under it may be a host path the test passes in."""
    return path_map.get(value.rstrip("/") or "/", path_map.get(value, value))


class NodeAgent:
    def __init__(self, workdir: Path, gpus: int = 8) -> None:
        self.workdir = workdir
        self.gpus = gpus
        self.core = client.CoreV1Api()
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.containers: dict[str, str] = {}  # pod uid -> podman container name, removed at shutdown
        self.started: set[str] = set()
        self.stopping: set[str] = set()
        self.lock = threading.Lock()

    # -- node -------------------------------------------------------------------------------
    def register(self) -> None:
        capacity = {
            "cpu": "64",
            "memory": "512Gi",
            "ephemeral-storage": "10Ti",
            "pods": "1000",
            "nvidia.com/gpu": str(self.gpus),
        }
        body = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=NODE_NAME, labels={"kubernetes.io/hostname": NODE_NAME, "olivekube.io/test-node": "true"}
            )
        )
        with contextlib.suppress(ApiException):
            self.core.create_node(body)
        # The API server taints a new Node not-ready (admission: TaintNodesByCondition); a cluster's
        # node lifecycle controller lifts it once the kubelet reports Ready, which this agent does.
        self.core.patch_node(NODE_NAME, {"spec": {"taints": None}})
        status = {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "NodeAgentReady",
                        "message": "olivekube test node agent",
                        "lastHeartbeatTime": now(),
                        "lastTransitionTime": now(),
                    }
                ],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            }
        }
        self.core.patch_node_status(NODE_NAME, status)

    # -- pods -------------------------------------------------------------------------------
    def handle(self, pod: client.V1Pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if pod.metadata.deletion_timestamp is not None:
            with self.lock:  # once per pod, beside the others (its grace period may be long)
                if pod.metadata.uid in self.stopping:
                    return
                self.stopping.add(pod.metadata.uid)
            threading.Thread(target=self.stop, args=(pod, key), daemon=True).start()
            return
        if pod.status.phase in ("Succeeded", "Failed"):
            return
        if pod.spec.node_name != NODE_NAME:  # the scheduler has not placed it here (yet)
            return
        with self.lock:
            if pod.metadata.uid in self.started:
                return
            self.started.add(pod.metadata.uid)
        threading.Thread(target=self.run_pod, args=(pod, key), daemon=True).start()

    def stop(self, pod: client.V1Pod, key: str) -> None:
        proc = self.running.pop(pod.metadata.uid, None)
        if proc is not None and proc.poll() is None and self.in_podman(pod.spec.containers[0].image):
            grace = str(pod.metadata.deletion_grace_period_seconds or 5)  # SIGTERM, then SIGKILL after grace
            name = self.container_name(pod)
            subprocess.run(["podman", "stop", "-t", grace, name], env=PODMAN_ENV, capture_output=True)
            subprocess.run(["podman", "rm", "-f", name], env=PODMAN_ENV, capture_output=True)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=pod.metadata.deletion_grace_period_seconds or 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if pod.spec.node_name in (None, NODE_NAME):
            if pod.status.phase not in ("Succeeded", "Failed"):
                # As a kubelet does: report the killed container, so that the Job controller can
                # account the pod and drop its tracking finalizer; then finish the deletion.
                container = pod.spec.containers[0]
                self.patch_status(
                    pod,
                    {
                        "phase": "Failed",
                        "reason": "Terminated",
                        "message": "the pod was deleted",
                        "containerStatuses": [
                            {
                                "name": container.name,
                                "image": container.image,
                                "imageID": container.image,
                                "ready": False,
                                "restartCount": 0,
                                "state": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": now()}},
                            }
                        ],
                    },
                )
            try:
                self.core.delete_namespaced_pod(
                    pod.metadata.name,
                    pod.metadata.namespace,
                    body=client.V1DeleteOptions(
                        grace_period_seconds=0, preconditions=client.V1Preconditions(uid=pod.metadata.uid)
                    ),
                )
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("delete %s: %s %s", key, exc.status, exc.body)
        log.info("stopped %s", key)

    def patch_status(self, pod: client.V1Pod, status: dict[str, Any]) -> None:
        """Like the kubelet's status manager: retried while the API server is away (restarting)."""
        deadline = time.monotonic() + 180
        while True:
            try:
                meta = pod.metadata
                self.core.patch_namespaced_pod_status(meta.name, meta.namespace, {"status": status})
                return
            except ApiException as exc:
                if exc.status == 404 or exc.status < 500 or time.monotonic() > deadline:
                    if exc.status != 404:
                        log.warning("status %s: %s", pod.metadata.name, exc.reason)
                    return
            except Exception as exc:  # no connection: the API server is restarting
                if time.monotonic() > deadline:
                    log.warning("status %s: %s", pod.metadata.name, exc)
                    return
            time.sleep(1)

    def fail(self, pod: client.V1Pod, reason: str, message: str) -> None:
        container = pod.spec.containers[0]
        self.patch_status(
            pod,
            {
                "phase": "Failed",
                "reason": reason,
                "message": message,
                "containerStatuses": [
                    {
                        "name": container.name,
                        "image": container.image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": message}},
                    }
                ],
            },
        )

    # -- environment and mounts -----------------------------------------------------------------
    def _secret(self, ns: str, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, ns).data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _configmap(self, ns: str, name: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_config_map(name, ns).data or {})

    def _field(self, pod: client.V1Pod, path: str) -> str:
        simple = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": NODE_NAME,
            "spec.serviceAccountName": pod.spec.service_account_name or "default",
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path])
        m = re.match(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((getattr(pod.metadata, m.group(1)) or {}).get(m.group(2), ""))
        raise ValueError(f"unsupported fieldRef {path}")

    def environment(self, pod: client.V1Pod, container: client.V1Container) -> dict[str, str]:
        ns = pod.metadata.namespace
        env: dict[str, str] = {}
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.secret_ref:
                values = self._secret(ns, source.secret_ref.name)
            else:
                values = self._configmap(ns, source.config_map_ref.name)
            env.update({prefix + k: v for k, v in values.items()})
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var.value or "")
            elif var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                env[var.name] = self._secret(ns, ref.name)[ref.key]
            elif var.value_from.config_map_key_ref:
                ref = var.value_from.config_map_key_ref
                env[var.name] = self._configmap(ns, ref.name)[ref.key]
            elif var.value_from.field_ref:
                env[var.name] = self._field(pod, var.value_from.field_ref.field_path)
            else:
                raise ValueError(f"env {var.name}: unsupported valueFrom")
        return env

    def mounts(self, pod: client.V1Pod, container: client.V1Container, pod_dir: Path) -> dict[str, str]:
        """Map each mount path to a local folder, filling Secret, ConfigMap and token volumes."""
        ns = pod.metadata.namespace
        volumes = {v.name: v for v in pod.spec.volumes or []}
        path_map: dict[str, str] = {}
        for mount in container.volume_mounts or []:
            vol = volumes[mount.name]
            if vol.persistent_volume_claim is not None:
                local = self.workdir / "pvcs" / ns / vol.persistent_volume_claim.claim_name
            elif vol.host_path is not None:
                local = Path(vol.host_path.path)
            else:
                local = pod_dir / "volumes" / mount.name
            local.mkdir(parents=True, exist_ok=True)
            if vol.secret is not None:
                for k, v in self._secret(ns, vol.secret.secret_name).items():
                    (local / k).write_text(v)
            if vol.config_map is not None:
                for k, v in self._configmap(ns, vol.config_map.name).items():
                    (local / k).write_text(v)
            if vol.projected is not None:
                self._projected(pod, vol.projected, local)
            if mount.sub_path:
                local = local / mount.sub_path
                local.mkdir(parents=True, exist_ok=True)
            path_map[mount.mount_path] = str(local)
        return path_map

    def _projected(self, pod: client.V1Pod, projected: Any, local: Path) -> None:
        for source in projected.sources or []:
            if source.service_account_token is not None:
                token = self.core.create_namespaced_service_account_token(
                    pod.spec.service_account_name or "default",
                    pod.metadata.namespace,
                    client.AuthenticationV1TokenRequest(
                        spec=client.V1TokenRequestSpec(
                            audiences=[],
                            expiration_seconds=source.service_account_token.expiration_seconds or 3600,
                            bound_object_ref=client.V1BoundObjectReference(
                                kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid
                            ),
                        )
                    ),
                )
                (local / source.service_account_token.path).write_text(token.status.token)
            if source.config_map is not None:
                data = self._configmap(pod.metadata.namespace, source.config_map.name)
                for item in source.config_map.items or [client.V1KeyToPath(key=k, path=k) for k in data]:
                    (local / item.path).write_text(data[item.key])
            if source.downward_api is not None:
                for item in source.downward_api.items or []:
                    (local / item.path).write_text(self._field(pod, item.field_ref.field_path))

    # -- containers -------------------------------------------------------------------------
    @staticmethod
    def in_podman(image: str | None) -> bool:
        """Whether `image` is one podman holds here (tools/images.sh built it): run it in a container."""
        if not image or not image.startswith("localhost/"):
            return False
        found = subprocess.run(["podman", "image", "exists", image], env=PODMAN_ENV, capture_output=True)
        return found.returncode == 0

    @staticmethod
    def container_name(pod: client.V1Pod) -> str:
        return f"k8s-{pod.metadata.namespace}-{pod.metadata.name}-{pod.metadata.uid[:8]}"

    def subdomain_names(self, pod: client.V1Pod) -> list[str]:
        """What cluster DNS answers for the pods of an Indexed Job under a headless Service (its
        `subdomain`): `<job>-<index>.<subdomain>[.<namespace>.svc]`, all this node (host network)."""
        job = (pod.metadata.labels or {}).get("batch.kubernetes.io/job-name")
        if not pod.spec.subdomain or not job:
            return []
        completions = client.BatchV1Api().read_namespaced_job(job, pod.metadata.namespace).spec.completions or 1
        names = []
        for index in range(completions):
            short = f"{job}-{index}.{pod.spec.subdomain}"
            names += [
                short,
                f"{short}.{pod.metadata.namespace}.svc",
                f"{short}.{pod.metadata.namespace}.svc.cluster.local",
            ]
        return names

    @staticmethod
    def service_names(pod: client.V1Pod) -> list[str]:
        """What cluster DNS answers for Services: `<service>.<namespace>.svc[.cluster.local]`, and the
        short name for those of the pod's own namespace."""
        names = []
        for service in client.CoreV1Api().list_service_for_all_namespaces().items:
            name, namespace = service.metadata.name, service.metadata.namespace
            names += [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
            if namespace == pod.metadata.namespace:
                names.append(name)
        return names

    def container_command(
        self,
        pod: client.V1Pod,
        container: client.V1Container,
        env: dict[str, str],
        mounts: dict[str, str],
        pod_dir: Path,
    ) -> list[str]:
        """`podman run` for the pod's container, as a kubelet would configure it."""
        from kubernetes.utils import parse_quantity

        pod_sc, sc = pod.spec.security_context, container.security_context
        user = (sc and sc.run_as_user) if sc and sc.run_as_user is not None else (pod_sc and pod_sc.run_as_user)
        group = (sc and sc.run_as_group) or (pod_sc and pod_sc.run_as_group) or user
        fs_group = pod_sc.fs_group if pod_sc and pod_sc.fs_group is not None else group
        command = [*PODMAN_RUN, "--ulimit", "nproc=4096:4096", "--name", self.container_name(pod)]
        command += ["--hostname", pod.spec.hostname or pod.metadata.name]
        for name in [*self.subdomain_names(pod), *self.service_names(pod)]:
            command += ["--add-host", f"{name}:127.0.0.1"]
        if user is not None:
            command += ["--user", f"{user}:{group}"]
            if fs_group is not None:
                command += ["--group-add", str(fs_group)]
        if sc and sc.read_only_root_filesystem:
            command.append("--read-only")
        for cap in (sc and sc.capabilities and sc.capabilities.drop) or []:
            command.append(f"--cap-drop={cap}")
        if sc and sc.allow_privilege_escalation is False:
            command += ["--security-opt", "no-new-privileges"]
        memory = ((container.resources and container.resources.limits) or {}).get("memory")
        if memory:
            size = int(parse_quantity(memory))
            command += ["--memory", str(size), "--memory-swap", str(size)]
        read_only = {m.mount_path for m in container.volume_mounts or [] if m.read_only}
        for path, local in mounts.items():
            if user is not None and Path(local).is_relative_to(self.workdir):  # the agent's volumes: fsGroup
                for item in [Path(local), *Path(local).rglob("*")]:
                    os.chown(item, user, fs_group if fs_group is not None else -1)
            command += ["-v", f"{local}:{path}{':ro' if path in read_only else ''}"]
        env_file = pod_dir / "container.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items() if "\n" not in v))
        env_file.chmod(0o600)
        command += ["--env-file", str(env_file)]
        if container.working_dir:
            command += ["--workdir", container.working_dir]
        if container.command:
            command += ["--entrypoint", json.dumps(container.command)]
        return [*command, container.image, *(container.args or [])]

    def container_id(self, pod: client.V1Pod, proc: subprocess.Popen[bytes]) -> str:
        """`podman://ID` of the pod's container once podman has created it (as a kubelet reports it)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            command = ["podman", "inspect", "--format", "{{.Id}}", self.container_name(pod)]
            found = subprocess.run(command, env=PODMAN_ENV, capture_output=True, text=True)
            if found.returncode == 0:
                return f"podman://{found.stdout.strip()}"
            time.sleep(0.2)
        return "podman://unknown"

    def end_container(self, pod: client.V1Pod, code: int) -> bool:
        """Remove the pod's container; whether the kernel's memory-cgroup OOM killer ended it."""
        name = self.container_name(pod)
        out = subprocess.run(["podman", "inspect", name], env=PODMAN_ENV, capture_output=True, text=True)
        subprocess.run(["podman", "rm", "-f", name], env=PODMAN_ENV, capture_output=True)
        if code != 137 or out.returncode != 0:
            return False
        info = json.loads(out.stdout)[0]
        if info["State"].get("OOMKilled"):
            return True
        kernel = subprocess.run(["dmesg"], capture_output=True, text=True).stdout  # podman 4.3 + runc, cgroup v1
        return any("oom-kill" in line and f"libpod-{info['Id']}" in line for line in kernel.splitlines())

    # -- running ----------------------------------------------------------------------------
    def run_pod(self, pod: client.V1Pod, key: str) -> None:
        container = pod.spec.containers[0]
        if not IMAGE_PATTERN.search(container.image or ""):
            self.fail(
                pod,
                "ImageNotRunnable",
                f"the test node agent runs only the project's own images (olivekube...), not {container.image!r}",
            )
            return
        pod_dir = self.workdir / "pods" / pod.metadata.namespace / pod.metadata.name
        pod_dir.mkdir(parents=True, exist_ok=True)
        try:
            env = self.environment(pod, container)
            path_map = self.mounts(pod, container, pod_dir)
        except (ApiException, KeyError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, ApiException) else str(exc)
            self.fail(pod, "CreateContainerConfigError", f"{reason}")
            return
        term_path = container.termination_message_path or "/dev/termination-log"
        term_file = pod_dir / "termination-log"
        term_file.write_text("")
        path_map[term_path] = str(term_file)
        host_env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR", "PYTHONPATH")}
        full_env = {
            **host_env,
            "PATH": f"{VENV_BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOSTNAME": pod.metadata.name,
            **{k: local_path(v, path_map) for k, v in env.items()},
            "OLIVEKUBE_TEST_NODE_PATHS": json.dumps(path_map),
        }
        cwd = local_path(container.working_dir, path_map) if container.working_dir else str(pod_dir)
        if SA_DIR in path_map:
            for env_map in (full_env, env):
                env_map.setdefault("KUBERNETES_SERVICE_HOST", os.environ.get("OLIVEKUBE_API_HOST", "127.0.0.1"))
                env_map.setdefault("KUBERNETES_SERVICE_PORT", os.environ.get("OLIVEKUBE_API_PORT", "443"))
        argv = [*(container.command or []), *(container.args or [])]
        in_container = self.in_podman(container.image)
        if not argv and not in_container:
            self.fail(pod, "CreateContainerConfigError", "the node agent needs the container's command")
            return
        argv = [re.sub(r"\$\((\w+)\)", lambda m: full_env.get(m.group(1), m.group(0)), a) for a in argv]
        if in_container:
            argv = self.container_command(pod, container, env, path_map, pod_dir)
            full_env, cwd = PODMAN_ENV, str(pod_dir)
        elif argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        started = now()
        log_file = open(pod_dir / "container.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                argv,
                env=full_env,
                cwd=cwd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self.fail(pod, "StartError", f"cannot run {argv[0]!r}: {exc.strerror}")
            return
        self.running[pod.metadata.uid] = proc
        if in_container:
            self.containers[pod.metadata.uid] = self.container_name(pod)
        base = {"name": container.name, "image": container.image, "imageID": container.image, "restartCount": 0}
        if in_container:
            base["containerID"] = self.container_id(pod, proc)
        self.patch_status(
            pod,
            {
                "phase": "Running",
                "startTime": started,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": started},
                    {"type": "Ready", "status": "True", "lastTransitionTime": started},
                ],
                "containerStatuses": [
                    {**base, "ready": True, "started": True, "state": {"running": {"startedAt": started}}}
                ],
            },
        )
        log.info("started %s: %s", key, " ".join(argv))
        code = proc.wait()
        log_file.close()
        if self.running.pop(pod.metadata.uid, None) is None:
            return  # deleted: stop() owns the pod now
        oom = in_container and self.end_container(pod, code)
        message = term_file.read_text(errors="replace")[-4096:]
        if not message and code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
            lines = (pod_dir / "container.log").read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-4096:]
        finished = now()
        terminated = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else "OOMKilled" if oom else "Error",
            "startedAt": started,
            "finishedAt": finished,
        }
        if message:
            terminated["message"] = message
        self.patch_status(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished},
                    {
                        "type": "ContainersReady",
                        "status": "False",
                        "reason": "PodCompleted",
                        "lastTransitionTime": finished,
                    },
                ],
                "containerStatuses": [
                    {**base, "ready": False, "started": False, "state": {"terminated": terminated}}
                ],
            },
        )
        log.info("finished %s with %s", key, code)

    # -- main loop --------------------------------------------------------------------------
    def heartbeat(self) -> None:
        while True:
            time.sleep(20)
            with contextlib.suppress(Exception):
                self.register()

    def serve(self) -> None:
        self.register()
        threading.Thread(target=self.heartbeat, daemon=True).start()
        resource_version = ""
        while True:
            try:
                if not resource_version:
                    pods = self.core.list_pod_for_all_namespaces()
                    for pod in pods.items:
                        self.handle(pod)
                    resource_version = pods.metadata.resource_version
                for event in watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces, resource_version=resource_version, timeout_seconds=300
                ):
                    pod = event["object"]
                    resource_version = pod.metadata.resource_version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.handle(pod)
                    elif event["type"] == "DELETED":
                        proc = self.running.pop(pod.metadata.uid, None)
                        if proc is not None and proc.poll() is None:
                            with contextlib.suppress(ProcessLookupError):
                                os.killpg(proc.pid, signal.SIGKILL)
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = ""
                else:
                    log.warning("watch: %s", exc.reason)
                    time.sleep(1)
            except Exception as exc:  # the connection dropped (API server restarting): watch again
                log.warning("watch: %s", exc)
                time.sleep(1)

    def shutdown(self, *_: object) -> None:
        # A killed `podman run` leaves its container running (conmon owns it): remove them, or every
        # test module's operator container would outlive its control plane.
        names = list(self.containers.values())
        if names:
            subprocess.run(
                ["podman", "rm", "--force", "--ignore", "--time", "0", *names], env=PODMAN_ENV, capture_output=True
            )
        for proc in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu the node advertises")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config.load_kube_config(str(args.kubeconfig))
    agent = NodeAgent(args.workdir, gpus=args.gpus)
    signal.signal(signal.SIGTERM, agent.shutdown)
    agent.serve()


if __name__ == "__main__":
    main()
