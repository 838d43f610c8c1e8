"""Shared setup for the interop suite: Google's own clients against a running longrun.

Environment:
  LONGRUN_ENDPOINT   REST base URL of a running server, default http://127.0.0.1:8080.
                     gRPC (plaintext h2c) is served on the same host:port.
  LONGRUN_GRPC_TARGET  host:port for gRPC when it is not the REST port (development
                     against test doubles only; longrun serves both on one port).
  LONGRUN_PROTO_PY   directory holding Python modules generated from
                     proto/longrun/v1/*.proto (`python -m grpc_tools.protoc -I proto
                     --python_out=DIR --grpc_python_out=DIR proto/longrun/v1/*.proto`).
                     When unset they are generated into a temporary directory.

The generated `longrun.v1.metadata_pb2` is imported here, before any client
parses a response, so `type.googleapis.com/longrun.v1.OperationMetadata` is in
the default descriptor pool: that is how users of Google's REST client load
longrun's types. (test_grpc.py shows the other way: gRPC reflection.)
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import grpc
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = os.environ.get("LONGRUN_ENDPOINT", "http://127.0.0.1:8080").rstrip("/")
GRPC_TARGET = os.environ.get("LONGRUN_GRPC_TARGET") or urllib.parse.urlsplit(ENDPOINT).netloc
HTTP_TIMEOUT = 60  # seconds; generous, every call is expected to be quick

# requests, httplib2 and gRPC all honour *_proxy variables; the server is local.
for _var in ("no_proxy", "NO_PROXY"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    os.environ[_var] = ",".join(_hosts + [urllib.parse.urlsplit(ENDPOINT).hostname or ""])


def _generated_protos_dir() -> str:
    configured = os.environ.get("LONGRUN_PROTO_PY")
    if configured:
        return configured
    import grpc_tools
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="longrun-proto-py-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    protos = sorted(str(p) for p in (REPO / "proto" / "longrun" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{REPO / 'proto'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
    ]
    if protoc.main(args + protos) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    return out


# Appended, not prepended: if the directory also holds google/rpc or
# google/longrunning modules, googleapis-common-protos must still win, or the
# same .proto file would be registered twice in the default pool.
sys.path.append(_generated_protos_dir())

from longrun.v1 import metadata_pb2  # noqa: E402, F401  (registers OperationMetadata)

METADATA_TYPE = "type.googleapis.com/longrun.v1.OperationMetadata"
STRUCT_TYPE = "type.googleapis.com/google.protobuf.Struct"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
ERROR_DOMAIN = "longrun.dev"


# --------------------------------------------------------------------------
# Plain REST helpers (longrun's producer API and the consumer API as JSON).
# --------------------------------------------------------------------------


def rest(method: str, path: str, **kwargs) -> requests.Response:
    """One HTTP call to the server; `path` starts with "/v1/...".

    A fresh connection per call keeps the helpers safe to use from threads.
    """
    kwargs.setdefault("timeout", HTTP_TIMEOUT)
    return requests.request(method, ENDPOINT + path, **kwargs)


def _ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, (
        f"{resp.request.method} {resp.url} -> {resp.status_code}: {resp.text}"
    )
    return resp.json()


def collection_path(parent: str) -> str:
    """REST path of the operations collection under `parent` ("" = top level)."""
    return f"/v1/{parent}/operations" if parent else "/v1/operations"


def create(parent: str, **body) -> dict:
    """Producer Create; keyword arguments are the JSON body (camelCase)."""
    return _ok(rest("POST", collection_path(parent), json=body))


def update(name: str, **body) -> dict:
    """Producer Update; returns {"cancelRequested": ...}."""
    return _ok(rest("POST", f"/v1/{name}:update", json=body))


def complete(name: str, **body) -> dict:
    """Producer Complete, e.g. complete(name, response={...}) or error={...}."""
    return _ok(rest("POST", f"/v1/{name}:complete", json=body))


def get(name: str) -> dict:
    return _ok(rest("GET", f"/v1/{name}"))


def cancel(name: str) -> dict:
    return _ok(rest("POST", f"/v1/{name}:cancel", json={}))


def list_names(parent: str, **params) -> list[str]:
    """Names of every operation under `parent` (all pages), in server order."""
    names: list[str] = []
    params = dict(params)
    while True:
        page = _ok(rest("GET", collection_path(parent), params=params))
        names += [op["name"] for op in page.get("operations", [])]
        token = page.get("nextPageToken", "")
        if not token:
            return names
        params["pageToken"] = token


def assert_error(resp: requests.Response, http: int, status: str) -> dict:
    """Checks an AIP-193 error envelope and returns its "error" object."""
    assert resp.status_code == http, (
        f"{resp.request.method} {resp.url}: expected {http} {status}, "
        f"got {resp.status_code}: {resp.text}"
    )
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == http, error
    assert error["status"] == status, error
    assert isinstance(error.get("message"), str) and error["message"], error
    infos = [d for d in error.get("details", []) if d.get("@type") == ERROR_INFO_TYPE]
    assert len(infos) == 1, f"expected one google.rpc.ErrorInfo detail: {error}"
    assert infos[0]["domain"] == ERROR_DOMAIN, infos[0]
    assert infos[0].get("reason"), infos[0]
    return error


class DelayedCompletion(threading.Thread):
    """Completes an operation through REST after `delay` seconds, in the background.

    `completed_at` is the time.monotonic() at which the :complete call returned.
    Call `finish()` at the end of the test to join and surface any failure.
    """

    def __init__(self, name: str, delay: float = 1.5, **body):
        super().__init__(daemon=True, name=f"complete {name}")
        self.op_name = name
        self.delay = delay
        self.body = body
        self.completed_at: float | None = None
        self.failure: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            time.sleep(self.delay)
            complete(self.op_name, **self.body)
            self.completed_at = time.monotonic()
        except BaseException as exc:  # reported by finish()
            self.failure = exc

    def finish(self) -> float:
        self.join(timeout=HTTP_TIMEOUT)
        assert not self.is_alive(), "background :complete did not return"
        if self.failure is not None:
            raise self.failure
        assert self.completed_at is not None
        return self.completed_at


# --------------------------------------------------------------------------
# Fixtures: the clients a user would reach for.
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def endpoint() -> str:
    return ENDPOINT


@pytest.fixture(scope="session")
def grpc_target() -> str:
    return GRPC_TARGET


@pytest.fixture(scope="session")
def grpc_channel(grpc_target):
    channel = grpc.insecure_channel(grpc_target)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        channel.close()
        pytest.fail(f"no gRPC server reachable at {grpc_target}")
    yield channel
    channel.close()


@pytest.fixture
def parent() -> str:
    """A fresh parent per test, so tests never see each other's operations."""
    return f"projects/it-{uuid.uuid4().hex[:16]}/locations/l"


@pytest.fixture(scope="session")
def rest_ops_client(endpoint):
    """google-api-core's REST operations client (the scheme goes in `host`)."""
    from google.api_core import operations_v1
    from google.auth.credentials import AnonymousCredentials

    transport = operations_v1.OperationsRestTransport(
        host=endpoint, credentials=AnonymousCredentials()
    )
    return operations_v1.AbstractOperationsClient(transport=transport)


@pytest.fixture(scope="session")
def grpc_ops_client(grpc_channel):
    """google-api-core's gRPC operations client."""
    from google.api_core import operations_v1

    return operations_v1.OperationsClient(grpc_channel)


@pytest.fixture(scope="session")
def operations_stub(grpc_channel):
    """The raw generated google.longrunning.Operations stub."""
    from google.longrunning import operations_pb2_grpc

    return operations_pb2_grpc.OperationsStub(grpc_channel)


@pytest.fixture(scope="session")
def control_stub(grpc_channel):
    """longrun's own producer API over gRPC (generated from longrun/v1/control.proto)."""
    from longrun.v1 import control_pb2_grpc

    return control_pb2_grpc.ControlStub(grpc_channel)


@pytest.fixture(scope="session")
def discovery(endpoint):
    """google-api-python-client built from the server's discovery document.

    No credentials: the document declares no OAuth scopes, so build() asks for none.
    """
    from googleapiclient.discovery import build

    return build(
        "longrun",
        "v1",
        discoveryServiceUrl=f"{endpoint}/$discovery/rest?version={{apiVersion}}",
        static_discovery=False,
        cache_discovery=False,
    )
