"""A local stand-in for Azure (Entra ID, Resource Manager, Azure ML's run history) over HTTPS on
loopback, answering the calls the real azure-ai-ml and azure-identity clients make for command jobs.

Azure cannot be reached from tests, so this is the one mocked remote, and only at the HTTP level:
olivekube's code runs unchanged with the real SDK, pointed here by the standard variables
ARM_CLOUD_METADATA_URL (a custom cloud), AZURE_AUTHORITY_HOST and REQUESTS_CA_BUNDLE.

Jobs go Queued → Running → Completed (or Failed with `fail_message`) as they are polled.
Every request is kept in `requests` for assertions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

CLOUD = "OlivekubeLocalCloud"
PROVIDER = "Microsoft.MachineLearningServices"
STORAGE_SUFFIX = "olivekube.test"
BLOB_ACCOUNT = "fakeaccount"
BLOB_CONTAINER = "fakecontainer"
WORKSPACE_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)(?P<rest>/.*)?$",
    re.IGNORECASE,
)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeJob:
    name: str
    body: dict[str, Any]
    polls: int = 0
    cancelled: bool = False


@dataclass
class FakeAzureML:
    """Start with `start()`; `env()` gives the variables that point the SDKs here."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fake-azureml-")))
    tenant_id: str = "00000000-0000-0000-0000-0000000000aa"
    client_id: str = "00000000-0000-0000-0000-0000000000bb"
    client_secret: str = "s3cr3t-" + uuid.uuid4().hex
    workspaces: set[str] = field(default_factory=lambda: {"ws"})
    computes: set[str] = field(default_factory=lambda: {"gpu-cluster"})
    polls_to_finish: int = 2
    fail_message: str | None = None
    erroring_after_submit: int = 0  # answer this many job GETs after a submission with an error
    erroring_job_reads: int = 0
    write_outputs: bool = True  # a completed job leaves an olivekube output (files + manifest), as the runner does
    requests: list[Recorded] = field(default_factory=list)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    tokens_issued: int = 0
    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    fail_blob_puts_after: int | None = None  # then refuse every blob write (an uploader cut off)
    blocks: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    blob_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakeAzureML:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = self.workdir / "tls.crt", self.workdir / "tls.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                "-addext", f"subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:*.blob.{STORAGE_SUFFIX}",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.ca_bundle = cert
        handler = _handler(self)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.proxy = _ConnectProxy(self.server.server_address[1])
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.proxy.stop()

    def proxy_env(self) -> dict[str, str]:
        """Blob hosts ({account}.blob.olivekube.test) do not resolve: reach them through a local
        CONNECT proxy, as a client behind a corporate proxy would (TLS stays end to end)."""
        return {
            "HTTPS_PROXY": f"http://127.0.0.1:{self.proxy.port}",
            "https_proxy": f"http://127.0.0.1:{self.proxy.port}",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this fake as it would to Azure."""
        return {
            "ARM_CLOUD_METADATA_URL": f"{self.url}/metadata/endpoints?api-version=2019-05-01",
            "AZUREML_CURRENT_CLOUD": CLOUD,
            "AZURE_AUTHORITY_HOST": self.url,
            "REQUESTS_CA_BUNDLE": str(self.ca_bundle),
            "SSL_CERT_FILE": str(self.ca_bundle),
        }

    def credentials(self) -> dict[str, str]:
        return {
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
        }

    def submitted(self) -> list[dict[str, Any]]:
        """Bodies of the jobs PUT so far, in order."""
        return [r.body for r in self.requests if r.method == "PUT" and "/jobs/" in r.path.lower()]


def _handler(fake: FakeAzureML) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", uuid.uuid4().hex)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, error_code: str, message: str) -> None:
            self._reply(code, {"error": {"code": error_code, "message": message}})

        def _handle(self) -> None:
            if self.headers.get("Host", "").startswith(f"{BLOB_ACCOUNT}.blob."):
                return _blob(self, fake)
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = parse_qs(raw.decode())
            fake.requests.append(
                Recorded(self.command, parsed.path, parse_qs(parsed.query), dict(self.headers), body)
            )
            path = parsed.path
            if path.startswith("/metadata/endpoints"):
                return self._reply(200, _cloud_metadata(fake.url))
            if path.endswith("/v2.0/.well-known/openid-configuration") or path.endswith(
                "/.well-known/openid-configuration"
            ):
                return self._reply(200, _openid(fake.url, fake.tenant_id))
            if path.endswith("/oauth2/v2.0/token"):
                return self._token(body or {})
            if path.startswith("/common/discovery/instance"):
                return self._reply(200, _instance_discovery(fake.url, fake.tenant_id))
            if path == "/discovery":
                keys = ("api", "catalog", "experimentation", "history", "modelmanagement", "pipelines", "studio")
                return self._reply(200, dict.fromkeys(keys, fake.url))
            if not self.headers.get("Authorization", "").startswith("Bearer fake-token-"):
                return self._error(401, "AuthenticationFailed", "no valid bearer token")
            if path.startswith("/operations/"):
                return self._reply(200, {"status": "Succeeded"})
            match = WORKSPACE_RE.match(path)
            if match:
                return self._workspace(match, body)
            if "/history/" in path.lower():
                return self._history(path)
            return self._error(404, "NotFound", f"fake Azure ML does not serve {self.command} {path}")

        def _token(self, form: dict[str, list[str]]) -> None:
            secret = (form.get("client_secret") or [""])[0]
            client = (form.get("client_id") or [""])[0]
            if client != fake.client_id or secret != fake.client_secret:
                return self._reply(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                        "error_codes": [7000215],
                    },
                )
            fake.tokens_issued += 1
            return self._reply(
                200,
                {
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "ext_expires_in": 3600,
                    "access_token": f"fake-token-{uuid.uuid4().hex}",
                },
            )

        def _workspace(self, match: re.Match[str], body: Any) -> None:
            ws = match["ws"]
            rest = match["rest"] or ""
            ws_id = (
                f"/subscriptions/{match['sub']}/resourceGroups/{match['rg']}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
            )
            if ws not in fake.workspaces:
                return self._error(
                    404,
                    "ResourceNotFound",
                    f"The Resource 'Microsoft.MachineLearningServices/workspaces/{ws}' under resource group "
                    f"'{match['rg']}' was not found.",
                )
            if rest == "":
                return self._reply(200, _workspace_body(ws_id, ws, fake.url))
            parts = [p for p in rest.split("/") if p]
            if parts[0] == "computes" and len(parts) == 2:
                if parts[1] not in fake.computes:
                    return self._error(404, "ResourceNotFound", f"Compute {parts[1]} not found in workspace {ws}.")
                return self._reply(200, _compute_body(ws_id, parts[1]))
            if parts[0] == "environments" and len(parts) == 4 and self.command == "PUT":
                out = dict(body or {})
                out.update(id=f"{ws_id}{rest}", name=parts[3], type=f"{PROVIDER}/workspaces/environments/versions")
                return self._reply(200, out)
            if parts[0] == "datastores" and len(parts) == 2:
                return self._reply(200, _datastore_body(ws_id, parts[1]))
            if parts[0] == "jobs" and len(parts) >= 2:
                return self._job(ws_id, parts[1], parts[2:], body)
            return self._error(404, "NotFound", f"fake workspace does not serve {self.command} {rest}")

        def _job(self, ws_id: str, name: str, tail: list[str], body: Any) -> None:
            job = fake.jobs.get(name)
            if self.command == "PUT" and not tail:
                props = (body or {}).get("properties") or {}
                compute = (props.get("computeId") or "").rsplit("/", 1)[-1]
                if compute and compute not in fake.computes:
                    return self._error(
                        400, "UserError", f"Compute {compute} not found in workspace {ws_id.rsplit('/', 1)[-1]}."
                    )
                stored = json.loads(json.dumps(body))
                stored.update(id=f"{ws_id}/jobs/{name}", name=name, type=f"{PROVIDER}/workspaces/jobs")
                stored["properties"]["status"] = "Queued"
                stored["properties"].setdefault("services", {})
                fake.jobs[name] = FakeJob(name, stored)
                fake.erroring_job_reads = fake.erroring_after_submit
                return self._reply(201, stored)
            if job is None:
                return self._error(404, "UserError", f"Job {name} not found.")
            if self.command == "GET" and not tail and fake.erroring_job_reads > 0:
                fake.erroring_job_reads -= 1  # not a status the SDK retries itself (503 is, for minutes)
                return self._error(400, "TransientError", "The job state is temporarily unavailable.")
            if self.command == "GET" and not tail:
                if not job.cancelled:
                    job.polls += 1
                    status = (
                        "Running"
                        if job.polls < fake.polls_to_finish
                        else ("Failed" if fake.fail_message else "Completed")
                    )
                    if status == "Completed" and job.body["properties"]["status"] != "Completed":
                        _write_outputs(fake, job)
                    job.body["properties"]["status"] = status
                return self._reply(200, job.body)
            if self.command == "POST" and tail == ["cancel"]:
                job.cancelled = True
                job.body["properties"]["status"] = "Canceled"
                location = f"{fake.url}/operations/{uuid.uuid4().hex}"
                return self._reply(202, None, {"Location": location, "Retry-After": "0"})
            return self._error(404, "NotFound", f"fake job does not serve {self.command} {tail}")

        def _history(self, path: str) -> None:
            parts = path.rstrip("/").split("/")
            name = parts[-2] if parts[-1] == "details" else parts[-1]
            job = fake.jobs.get(name)
            if job is None:
                return self._error(404, "UserError", f"Run {name} not found.")
            status = job.body["properties"]["status"]
            details: dict[str, Any] = {"runId": name, "status": status, "target": "", "properties": {}}
            if status == "Failed" and fake.fail_message:
                details["error"] = {"error": {"code": "UserError", "message": fake.fail_message}}
            return self._reply(200, details)

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_PATCH(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

    return Handler


def _cloud_metadata(url: str) -> list[dict[str, Any]]:
    return [
        {
            "name": CLOUD,
            "portal": "https://portal.olivekube.test/",
            "resourceManager": f"{url}/",
            "authentication": {"loginEndpoint": f"{url}/", "audiences": [f"{url}/"], "tenant": "common"},
            "suffixes": {"storage": "olivekube.test"},
        }
    ]


def _openid(url: str, tenant: str) -> dict[str, Any]:
    base = f"{url}/{tenant}"
    return {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "issuer": f"{base}/v2.0",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "tenant_region_scope": None,
    }


def _instance_discovery(url: str, tenant: str) -> dict[str, Any]:
    host = urlparse(url).netloc
    return {
        "tenant_discovery_endpoint": f"{url}/{tenant}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }


def _workspace_body(ws_id: str, name: str, url: str) -> dict[str, Any]:
    return {
        "id": ws_id,
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "location": "local",
        "kind": "Default",
        "properties": {
            "friendlyName": name,
            "discoveryUrl": f"{url}/discovery",
            "mlFlowTrackingUri": f"azureml://{urlparse(url).netloc}/mlflow/v1.0{ws_id}",
            "workspaceId": str(uuid.uuid5(uuid.NAMESPACE_URL, ws_id)),
            "provisioningState": "Succeeded",
        },
    }


def _compute_body(ws_id: str, name: str) -> dict[str, Any]:
    return {
        "id": f"{ws_id}/computes/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/computes",
        "location": "local",
        "properties": {"computeType": "AmlCompute", "provisioningState": "Succeeded", "properties": {}},
    }


def _datastore_body(ws_id: str, name: str) -> dict[str, Any]:
    return {
        "id": f"{ws_id}/datastores/{name}",
        "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/datastores",
        "properties": {
            "datastoreType": "AzureBlob",
            "accountName": BLOB_ACCOUNT,
            "containerName": BLOB_CONTAINER,
            "endpoint": STORAGE_SUFFIX,
            "protocol": "https",
            "credentials": {"credentialsType": "None"},
            "isDefault": name == "workspaceblobstore",
        },
    }


def _write_outputs(fake: FakeAzureML, job: FakeJob) -> None:
    """What `olivekube runner` inside the job would leave at each output: its files, then the manifest."""
    if not fake.write_outputs:
        return
    for output in (job.body["properties"].get("outputs") or {}).values():
        match = re.search(r"/datastores/[^/]+/paths/(.+)$", output.get("uri") or "")
        if not match:
            continue
        prefix = match[1].strip("/")
        data = f"weights written by {job.name}".encode()
        fake.blobs[(BLOB_CONTAINER, f"{prefix}/model.safetensors")] = data
        files = {"model.safetensors": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
        digest = hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        tags = job.body["properties"].get("tags") or {}
        metadata = {"kind": "hf", "pass_name": tags.get("olivekube.io/pass"), "metrics": {"train_loss": 1.25}}
        manifest = {"digest": digest, "files": files, "metadata": metadata}
        fake.blobs[(BLOB_CONTAINER, f"{prefix}/olivekube-manifest.json")] = json.dumps(manifest).encode()


def _blob(handler: BaseHTTPRequestHandler, fake: FakeAzureML) -> None:
    """Azure Blob Storage, enough for azure-storage-blob's list, get (ranged), put (single and
    in blocks), copy, properties and delete."""
    import email.utils
    from xml.sax.saxutils import escape

    parsed = urlparse(handler.path)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    fake.requests.append(
        Recorded(handler.command, parsed.path, parse_qs(parsed.query), dict(handler.headers), None)
    )
    parts = parsed.path.lstrip("/").split("/", 1)
    container, name = parts[0], (parts[1] if len(parts) > 1 else "")
    from urllib.parse import unquote

    name = unquote(name)
    key = (container, name)

    def reply(code: int, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        handler.send_response(code)
        base = {
            "x-ms-version": handler.headers.get("x-ms-version", "2021-08-06"),
            "x-ms-request-id": uuid.uuid4().hex,
            "Date": email.utils.formatdate(usegmt=True),
            "Content-Length": str(len(data)),
        }
        for k, v in {**base, **(headers or {})}.items():
            handler.send_header(k, v)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def missing(code: str = "BlobNotFound") -> None:
        xml = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'
        reply(404, xml.encode(), {"x-ms-error-code": code, "Content-Type": "application/xml"})

    def props(data: bytes) -> dict[str, str]:
        return {
            "ETag": '"0x' + hashlib.md5(data).hexdigest()[:16].upper() + '"',
            "Last-Modified": email.utils.formatdate(usegmt=True),
            "x-ms-creation-time": email.utils.formatdate(usegmt=True),
            "x-ms-blob-type": "BlockBlob",
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }

    auth = handler.headers.get("Authorization", "")
    if not (auth.startswith("Bearer fake-token-") or auth.startswith("SharedKey") or "sig" in query):
        reply(403, b"", {"x-ms-error-code": "AuthenticationFailed"})
        return
    if container != BLOB_CONTAINER:
        missing("ContainerNotFound")
        return
    command = handler.command
    if command == "PUT" and fake.fail_blob_puts_after is not None:
        if fake.fail_blob_puts_after <= 0:
            reply(403, b"", {"x-ms-error-code": "AuthorizationPermissionMismatch"})  # not retried
            return
        fake.fail_blob_puts_after -= 1
    if command == "GET" and query.get("comp") == "list":
        prefix = query.get("prefix", "")
        names = sorted(n for (c, n) in fake.blobs if c == container and n.startswith(prefix))
        items = "".join(
            f"<Blob><Name>{escape(n)}</Name><Properties><Content-Length>{len(fake.blobs[(container, n)])}"
            "</Content-Length><BlobType>BlockBlob</BlobType></Properties></Blob>"
            for n in names
        )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://x/" '
            f'ContainerName="{container}"><Prefix>{escape(prefix)}</Prefix><Blobs>{items}</Blobs>'
            "<NextMarker /></EnumerationResults>"
        )
        reply(200, xml.encode(), {"Content-Type": "application/xml"})
        return
    if command == "PUT" and query.get("comp") == "block":
        fake.blocks.setdefault(key, {})[query["blockid"]] = body
        reply(201)
        return
    if command == "PUT" and query.get("comp") == "blocklist":
        ids = re.findall(r"<(?:Latest|Uncommitted|Committed)>([^<]+)</", body.decode())
        staged = fake.blocks.pop(key, {})
        fake.blobs[key] = b"".join(staged[i] for i in ids)
        reply(201, b"", props(fake.blobs[key]))
        return
    if command == "PUT" and handler.headers.get("x-ms-copy-source"):
        source = urlparse(handler.headers["x-ms-copy-source"])
        src_container, src_name = source.path.lstrip("/").split("/", 1)
        data = fake.blobs.get((src_container, unquote(src_name)))
        if data is None:
            missing("CannotVerifyCopySource")
            return
        fake.blobs[key] = data
        reply(202, b"", {**props(data), "x-ms-copy-id": uuid.uuid4().hex, "x-ms-copy-status": "success"})
        return
    if command == "PUT":
        with fake.blob_lock:  # a conditional write is compare-and-set, as Blob Storage's
            held = fake.blobs.get(key)
            if_match, if_none_match = handler.headers.get("If-Match"), handler.headers.get("If-None-Match")
            stale = if_match is not None and (held is None or props(held)["ETag"] != if_match)
            if stale or (if_none_match == "*" and held is not None):
                code = "ConditionNotMet" if stale else "BlobAlreadyExists"
                xml = f'<?xml version="1.0"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'
                reply(
                    412 if stale else 409,
                    xml.encode(),
                    {"x-ms-error-code": code, "Content-Type": "application/xml"},
                )
                return
            fake.blobs[key] = body
        reply(201, b"", props(body))
        return
    data = fake.blobs.get(key)
    if data is None:
        missing()
        return
    if command == "DELETE":
        del fake.blobs[key]
        reply(202)
        return
    if command == "HEAD":
        handler.send_response(200)
        for k, v in {**props(data), "Content-Length": str(len(data)), "x-ms-version": "2021-08-06"}.items():
            handler.send_header(k, v)
        handler.end_headers()
        return
    wanted = handler.headers.get("x-ms-range") or handler.headers.get("Range")
    match = re.match(r"bytes=(\d+)-(\d*)", wanted or "")
    if match and data:
        start = int(match[1])
        end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
        headers = {**props(data), "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        reply(206, data[start : end + 1], headers)
        return
    reply(200, data, props(data))


class _ConnectProxy:
    """An HTTP CONNECT proxy that tunnels every host to the fake's port."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self.running = False
        self.sock.close()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: Any) -> None:
        import socket

        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(src: Any, dst: Any) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)


def main() -> None:
    fake = FakeAzureML().start()
    print(json.dumps({"url": fake.url, **fake.env(), **fake.credentials()}, indent=2), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
