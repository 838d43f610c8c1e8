"""AIP-193 errors: what a caller gets back for bad input, over REST and gRPC."""

from __future__ import annotations

import grpc
import pytest
from google.api_core import exceptions
from google.longrunning import operations_pb2

from conftest import (
    assert_error,
    complete,
    create,
    get,
    list_names,
    rest,
)

UNKNOWN_TYPE = "acme.Nope"
UNKNOWN_ANY = {"@type": f"type.googleapis.com/{UNKNOWN_TYPE}", "x": 1}


# --------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bad_filter", ["bogus = 1", "done = maybe", "(done = true"])
def test_bad_filter_is_invalid_argument(parent, bad_filter):
    resp = rest("GET", f"/v1/{parent}/operations", params={"filter": bad_filter})
    assert_error(resp, 400, "INVALID_ARGUMENT")


def test_bad_filter_through_grpc(operations_stub, parent):
    with pytest.raises(grpc.RpcError) as caught:
        operations_stub.ListOperations(
            operations_pb2.ListOperationsRequest(name=parent, filter="bogus = 1"), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details()


def test_negative_page_size_is_invalid_argument(parent):
    resp = rest("GET", f"/v1/{parent}/operations", params={"pageSize": -1})
    assert_error(resp, 400, "INVALID_ARGUMENT")


def test_garbage_page_token_is_invalid_argument(parent):
    resp = rest("GET", f"/v1/{parent}/operations", params={"pageToken": "garbage"})
    assert_error(resp, 400, "INVALID_ARGUMENT")


def _first_page_token(parent: str, **params) -> str:
    for _ in range(3):
        create(parent)
    page = rest("GET", f"/v1/{parent}/operations", params={"pageSize": 1, **params}).json()
    token = page["nextPageToken"]
    assert token
    return token


def test_edited_page_token_is_invalid_argument(parent):
    token = _first_page_token(parent)
    middle = len(token) // 2
    edited = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    resp = rest("GET", f"/v1/{parent}/operations", params={"pageSize": 1, "pageToken": edited})
    assert_error(resp, 400, "INVALID_ARGUMENT")


def test_page_token_is_bound_to_filter_and_parent(parent):
    token = _first_page_token(parent, filter="done = false")

    changed_filter = rest(
        "GET",
        f"/v1/{parent}/operations",
        params={"pageSize": 1, "pageToken": token, "filter": "done = true"},
    )
    assert_error(changed_filter, 400, "INVALID_ARGUMENT")

    other_parent = parent.rsplit("/", 1)[0] + "/other"
    moved = rest(
        "GET",
        f"/v1/{other_parent}/operations",
        params={"pageSize": 1, "pageToken": token, "filter": "done = false"},
    )
    assert_error(moved, 400, "INVALID_ARGUMENT")


# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------


def test_malformed_name_is_invalid_argument_naming_the_segment():
    resp = rest("GET", "/v1/projects/p/operations/bad%20id")
    error = assert_error(resp, 400, "INVALID_ARGUMENT")
    assert "bad id" in error["message"] or "bad%20id" in error["message"], error["message"]


def test_too_long_operation_id_is_invalid_argument(parent):
    resp = rest("GET", f"/v1/{parent}/operations/{'x' * 64}")
    assert_error(resp, 400, "INVALID_ARGUMENT")


def test_malformed_name_through_grpc(operations_stub, grpc_ops_client):
    with pytest.raises(grpc.RpcError) as caught:
        operations_stub.GetOperation(
            operations_pb2.GetOperationRequest(name="nonsense"), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # google-api-core reads the same ErrorInfo from the gRPC status details.
    with pytest.raises(exceptions.InvalidArgument) as caught_core:
        grpc_ops_client.get_operation("nonsense", retry=None)
    assert caught_core.value.domain == "longrun.dev"
    assert caught_core.value.reason


def test_not_found_envelope(parent):
    resp = rest("GET", f"/v1/{parent}/operations/does-not-exist")
    error = assert_error(resp, 404, "NOT_FOUND")
    assert "does-not-exist" in error["message"]


def test_not_found_through_grpc(operations_stub, parent):
    with pytest.raises(grpc.RpcError) as caught:
        operations_stub.GetOperation(
            operations_pb2.GetOperationRequest(name=f"{parent}/operations/does-not-exist"),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# --------------------------------------------------------------------------
# Payloads of unknown types are refused and change nothing
# --------------------------------------------------------------------------


def _assert_names_unknown_type(resp) -> None:
    error = assert_error(resp, 400, "INVALID_ARGUMENT")
    assert UNKNOWN_TYPE in error["message"], error["message"]
    assert "--descriptors" in error["message"], error["message"]


@pytest.mark.parametrize("field", ["metadata", "input"])
def test_create_with_unknown_type_is_refused(parent, field):
    body = {field: UNKNOWN_ANY, "operationId": "refused"}
    if field == "input":
        body["queue"] = "q"
    _assert_names_unknown_type(rest("POST", f"/v1/{parent}/operations", json=body))

    assert list_names(parent) == []
    assert_error(rest("GET", f"/v1/{parent}/operations/refused"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {"response": UNKNOWN_ANY},
        {"error": {"code": 9, "message": "no", "details": [UNKNOWN_ANY]}},
    ],
    ids=["response", "error-details"],
)
def test_complete_with_unknown_type_changes_nothing(parent, body):
    name = create(parent)["name"]
    before = get(name)
    _assert_names_unknown_type(rest("POST", f"/v1/{name}:complete", json=body))
    assert get(name) == before

    # ...and the operation can still be completed properly.
    assert complete(name, response={"ok": True})["done"] is True


def test_update_with_unknown_metadata_type_changes_nothing(parent):
    name = create(parent)["name"]
    before = get(name)
    resp = rest("POST", f"/v1/{name}:update", json={"metadata": UNKNOWN_ANY})
    _assert_names_unknown_type(resp)
    assert get(name) == before
