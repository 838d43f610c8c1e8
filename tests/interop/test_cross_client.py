"""One server, many clients: every client sees the same operations and filters alike."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.api_core import exceptions
from google.longrunning import operations_pb2
from google.protobuf import json_format
from googleapiclient.errors import HttpError

from conftest import (
    STRUCT_TYPE,
    assert_error,
    complete,
    create,
    get,
    list_names,
    rest,
    update,
)


def normalized(op) -> dict:
    """An Operation (proto or proto3 JSON) as a canonical dict.

    JSON goes through the strict parser first, so unknown fields or unknown
    Any types fail here as they would in Google's clients. Timestamps and
    number formats come out in one spelling whatever the source.
    """
    if isinstance(op, dict):
        op = json_format.ParseDict(op, operations_pb2.Operation())
    return json_format.MessageToDict(op)


@pytest.fixture
def views(rest_ops_client, grpc_ops_client, operations_stub, discovery):
    """Get the same operation through every client, keyed by client."""
    operations = discovery.projects().locations().operations()

    def fetch(name: str) -> dict[str, dict]:
        return {
            "rest-json": normalized(get(name)),
            "api-core-rest": normalized(rest_ops_client.get_operation(name)),
            "api-core-grpc": normalized(grpc_ops_client.get_operation(name)),
            "grpc-stub": normalized(
                operations_stub.GetOperation(
                    operations_pb2.GetOperationRequest(name=name), timeout=30
                )
            ),
            "discovery": normalized(operations.get(name=name).execute()),
        }

    return fetch


def assert_all_agree(seen: dict[str, dict]) -> dict:
    reference = seen["rest-json"]
    for client, op in seen.items():
        assert op == reference, f"{client} disagrees with rest-json"
    return reference


def test_running_operation_looks_the_same_everywhere(views, parent):
    name = create(parent, verb="export", target="datasets/d1")["name"]
    update(name, progressPercent=30, statusDetail="halfway-ish")
    op = assert_all_agree(views(name))
    assert op.get("done", False) is False
    assert "response" not in op and "error" not in op
    assert op["metadata"]["progressPercent"] == 30
    assert op["metadata"]["statusDetail"] == "halfway-ish"


def test_struct_response_looks_the_same_everywhere(views, parent):
    name = create(parent)["name"]
    payload = {"rows": 3, "tags": ["a", "b"], "nested": {"ok": True, "ratio": 0.25}}
    complete(name, response=payload)
    op = assert_all_agree(views(name))
    assert op["done"] is True
    assert op["response"] == {"@type": STRUCT_TYPE, "value": payload}
    assert "error" not in op


def test_error_looks_the_same_everywhere(views, parent):
    name = create(parent)["name"]
    complete(name, error={"code": 9, "message": "disk full"})
    op = assert_all_agree(views(name))
    assert op["done"] is True
    assert op["error"] == {"code": 9, "message": "disk full"}
    assert "response" not in op


def test_cancelled_looks_the_same_everywhere(views, parent):
    name = create(parent, queue="q")["name"]
    assert rest("POST", f"/v1/{name}:cancel", json={}).status_code == 200
    op = assert_all_agree(views(name))
    assert op["done"] is True
    assert op["error"]["code"] == 1
    assert op["metadata"]["state"] == "CANCELLED"


def test_deleted_is_not_found_everywhere(
    rest_ops_client, grpc_ops_client, operations_stub, discovery, parent
):
    name = create(parent)["name"]
    assert rest("DELETE", f"/v1/{name}").status_code == 200

    assert_error(rest("GET", f"/v1/{name}"), 404, "NOT_FOUND")

    with pytest.raises(grpc.RpcError) as grpc_error:
        operations_stub.GetOperation(operations_pb2.GetOperationRequest(name=name), timeout=30)
    assert grpc_error.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(exceptions.NotFound):
        rest_ops_client.get_operation(name)
    with pytest.raises(exceptions.NotFound):
        grpc_ops_client.get_operation(name, retry=None)

    with pytest.raises(HttpError) as http_error:
        discovery.projects().locations().operations().get(name=name).execute()
    assert http_error.value.status_code == 404
    assert http_error.value.reason


# --------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> dict:
    """Five operations in one parent, in every interesting state (created in this order)."""
    parent = f"projects/it-{uuid.uuid4().hex[:16]}/locations/l"
    ops = {
        "export": create(parent, verb="export", target="t1")["name"],
        "import": create(parent, verb="import", target="t2")["name"],
        "succeeded": create(parent, verb="export", target="t2")["name"],
        "failed": create(parent, verb="import", target="t1")["name"],
        "queued": create(parent, queue="q", verb="train")["name"],
    }
    complete(ops["succeeded"], response={"ok": True})
    complete(ops["failed"], error={"code": 9, "message": "disk full"})
    newest_first = list(ops.values())[::-1]
    return {"parent": parent, "ops": ops, "order": newest_first}


def expect(world: dict, *keys: str) -> list[str]:
    """The named operations' names, in the order the server lists them."""
    wanted = {world["ops"][k] for k in keys}
    return [name for name in world["order"] if name in wanted]


@pytest.mark.parametrize(
    "filter_, keys",
    [
        ("", ("export", "import", "succeeded", "failed", "queued")),
        ("done = true", ("succeeded", "failed")),
        ("done = false", ("export", "import", "queued")),
        ("metadata.state = QUEUED", ("queued",)),
        ("metadata.state = RUNNING", ("export", "import")),
        ("metadata.state = SUCCEEDED", ("succeeded",)),
        ("metadata.state = FAILED", ("failed",)),
        ("error.code = 9", ("failed",)),
        ('metadata.verb = "export"', ("export", "succeeded")),
        ('metadata.target = "t1"', ("export", "failed")),
        ('metadata.verb = "import" AND done = false', ("import",)),
        ('metadata.target = "t2" AND metadata.verb = "export" AND done = true', ("succeeded",)),
    ],
)
def test_filter_over_rest(world, filter_, keys):
    assert list_names(world["parent"], filter=filter_) == expect(world, *keys)


def test_filter_by_name(world):
    name = world["ops"]["import"]
    assert list_names(world["parent"], filter=f'name = "{name}"') == [name]


@pytest.fixture
def list_with(rest_ops_client, grpc_ops_client, operations_stub, discovery):
    operations = discovery.projects().locations().operations()

    def via_discovery(parent: str, filter_: str) -> list[str]:
        names, request = [], operations.list(name=parent, filter=filter_, pageSize=2)
        while request is not None:
            response = request.execute()
            names += [op["name"] for op in response.get("operations", [])]
            request = operations.list_next(request, response)
        return names

    def via_stub(parent: str, filter_: str) -> list[str]:
        names, token = [], ""
        while True:
            page = operations_stub.ListOperations(
                operations_pb2.ListOperationsRequest(
                    name=parent, filter=filter_, page_size=2, page_token=token
                ),
                timeout=30,
            )
            names += [op.name for op in page.operations]
            token = page.next_page_token
            if not token:
                return names

    return {
        "rest-json": lambda parent, f: list_names(parent, filter=f, pageSize=2),
        "api-core-rest": lambda parent, f: [
            op.name for op in rest_ops_client.list_operations(parent, f, page_size=2)
        ],
        "api-core-grpc": lambda parent, f: [
            op.name for op in grpc_ops_client.list_operations(parent, f)
        ],
        "grpc-stub": via_stub,
        "discovery": via_discovery,
    }


@pytest.mark.parametrize(
    "client", ["rest-json", "api-core-rest", "api-core-grpc", "grpc-stub", "discovery"]
)
def test_done_filters_through_every_client(world, list_with, client):
    list_ops = list_with[client]
    assert list_ops(world["parent"], "done = true") == expect(world, "succeeded", "failed")
    assert list_ops(world["parent"], "done = false") == expect(world, "export", "import", "queued")
