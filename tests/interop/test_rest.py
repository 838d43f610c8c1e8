"""The REST surface as plain JSON over HTTP: producer calls and consumer semantics."""

from __future__ import annotations

import time
import uuid

import pytest

from conftest import (
    METADATA_TYPE,
    STRUCT_TYPE,
    DelayedCompletion,
    assert_error,
    cancel,
    complete,
    create,
    get,
    list_names,
    rest,
    update,
)

OPERATION_FIELDS = {"name", "metadata", "done", "error", "response"}


def assert_operation_shape(op: dict) -> None:
    """Only google.longrunning.Operation fields; a done one has exactly one result."""
    assert set(op) <= OPERATION_FIELDS, f"unexpected fields: {set(op) - OPERATION_FIELDS}"
    assert op["metadata"]["@type"] == METADATA_TYPE
    if op.get("done"):
        assert ("error" in op) != ("response" in op), op
    else:
        assert "error" not in op and "response" not in op, op


# --------------------------------------------------------------------------
# Create, update, complete
# --------------------------------------------------------------------------


def test_external_operation_is_running_with_standard_metadata(parent):
    op = create(parent, verb="export", target="datasets/d1", apiVersion="v1")
    assert_operation_shape(op)
    assert op["name"].startswith(f"{parent}/operations/")
    assert not op.get("done", False)
    md = op["metadata"]
    assert md["state"] == "RUNNING"
    assert md["verb"] == "export"
    assert md["target"] == "datasets/d1"
    assert md["apiVersion"] == "v1"
    assert md["createTime"].endswith("Z")
    assert get(op["name"]) == op


def test_queued_operation_is_queued(parent):
    op = create(parent, queue="q", input={"rows": 10})
    assert_operation_shape(op)
    assert not op.get("done", False)
    assert op["metadata"]["state"] == "QUEUED"


def test_server_generated_ids_are_distinct(parent):
    names = {create(parent)["name"] for _ in range(5)}
    assert len(names) == 5


def test_chosen_operation_id_and_already_exists(parent):
    op = create(parent, operationId="export-1")
    assert op["name"] == f"{parent}/operations/export-1"

    again = rest("POST", f"/v1/{parent}/operations", json={"operationId": "export-1"})
    assert_error(again, 409, "ALREADY_EXISTS")
    assert list_names(parent) == [op["name"]]


def test_request_id_returns_the_same_operation(parent):
    request_id = str(uuid.uuid4())
    first = create(parent, requestId=request_id, verb="import")
    second = create(parent, requestId=request_id, verb="import")
    assert second["name"] == first["name"]
    assert list_names(parent) == [first["name"]]

    elsewhere = parent.rsplit("/", 1)[0] + "/other"
    assert create(elsewhere, requestId=request_id)["name"] != first["name"]


def test_progress_update_is_visible(parent):
    name = create(parent)["name"]
    reply = update(name, progressPercent=40, statusDetail="copying shard 2 of 5")
    assert reply.get("cancelRequested", False) is False

    md = get(name)["metadata"]
    assert md["progressPercent"] == 40
    assert md["statusDetail"] == "copying shard 2 of 5"
    assert md["state"] == "RUNNING"


def test_complete_with_plain_json_response_is_a_struct(parent):
    name = create(parent)["name"]
    payload = {"rows": 3, "tags": ["a", "b"], "nested": {"ok": True}, "note": None}
    done = complete(name, response=payload)
    assert_operation_shape(done)
    assert done["done"] is True
    assert done["response"] == {"@type": STRUCT_TYPE, "value": payload}
    assert done["metadata"]["state"] == "SUCCEEDED"
    assert done["metadata"]["endTime"].endswith("Z")
    assert get(name) == done


def test_complete_with_error_is_a_plain_status(parent):
    name = create(parent)["name"]
    done = complete(name, error={"code": 9, "message": "disk full"})
    assert_operation_shape(done)
    assert done["done"] is True
    assert done["error"]["code"] == 9
    assert done["error"]["message"] == "disk full"
    assert done["metadata"]["state"] == "FAILED"
    assert get(name) == done


def test_completing_twice_is_failed_precondition(parent):
    name = create(parent)["name"]
    done = complete(name, response={"n": 1})
    second = rest("POST", f"/v1/{name}:complete", json={"response": {"n": 2}})
    assert_error(second, 400, "FAILED_PRECONDITION")
    assert get(name) == done


def test_alt_json_and_xgafv_are_accepted(parent):
    name = create(parent)["name"]
    resp = rest("GET", f"/v1/{name}", params={"alt": "json", "$.xgafv": "2"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == name


# --------------------------------------------------------------------------
# Cancel
# --------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["json", "empty"], ids=["json-body", "empty-body"])
def test_cancel_queued_operation_finishes_at_once(parent, body):
    name = create(parent, queue="q")["name"]
    if body == "json":
        resp = rest("POST", f"/v1/{name}:cancel", json={})
    else:
        resp = rest("POST", f"/v1/{name}:cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {}

    op = get(name)
    assert_operation_shape(op)
    assert op["done"] is True
    assert op["error"]["code"] == 1
    assert op["metadata"]["state"] == "CANCELLED"


def test_cancel_running_operation_asks_the_producer(parent):
    name = create(parent)["name"]
    assert cancel(name) == {}

    op = get(name)
    assert not op.get("done", False)
    assert op["metadata"]["cancelRequested"] is True
    assert op["metadata"]["state"] == "RUNNING"
    assert update(name, progressPercent=10)["cancelRequested"] is True

    finished = complete(name, error={"code": 1, "message": "cancelled by user"})
    assert finished["done"] is True
    assert finished["error"]["code"] == 1
    assert finished["metadata"]["state"] == "CANCELLED"


def test_cancel_done_operation_changes_nothing(parent):
    name = create(parent)["name"]
    done = complete(name, response={"ok": True})
    assert cancel(name) == {}
    assert get(name) == done


# --------------------------------------------------------------------------
# Delete
# --------------------------------------------------------------------------


def test_delete_removes_the_record(parent):
    keep = create(parent)["name"]
    gone = create(parent)["name"]

    resp = rest("DELETE", f"/v1/{gone}")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {}

    assert_error(rest("GET", f"/v1/{gone}"), 404, "NOT_FOUND")
    assert list_names(parent) == [keep]
    assert_error(rest("DELETE", f"/v1/{gone}"), 404, "NOT_FOUND")


def test_producer_of_a_deleted_operation_gets_not_found(parent):
    name = create(parent)["name"]
    assert rest("DELETE", f"/v1/{name}").status_code == 200
    assert_error(rest("POST", f"/v1/{name}:update", json={"progressPercent": 5}), 404, "NOT_FOUND")
    assert_error(rest("POST", f"/v1/{name}:complete", json={"response": {}}), 404, "NOT_FOUND")


# --------------------------------------------------------------------------
# List
# --------------------------------------------------------------------------


def test_list_is_newest_first_across_pages(parent):
    created = [create(parent)["name"] for _ in range(5)]

    pages = []
    params = {"pageSize": 2}
    while True:
        resp = rest("GET", f"/v1/{parent}/operations", params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) <= {"operations", "nextPageToken", "unreachable"}, page
        pages.append(page)
        if not page.get("nextPageToken"):
            break
        params["pageToken"] = page["nextPageToken"]
        assert len(pages) < 10, "paging does not end"

    assert [len(p.get("operations", [])) for p in pages] == [2, 2, 1]
    seen = [op["name"] for p in pages for op in p["operations"]]
    assert seen == created[::-1]


def test_list_default_page_size_returns_everything_small(parent):
    created = [create(parent)["name"] for _ in range(3)]
    page = rest("GET", f"/v1/{parent}/operations", params={"pageSize": 0}).json()
    assert [op["name"] for op in page["operations"]] == created[::-1]
    assert not page.get("nextPageToken")


def test_list_empty_collection(parent):
    resp = rest("GET", f"/v1/{parent}/operations")
    assert resp.status_code == 200, resp.text
    page = resp.json()
    assert page.get("operations", []) == []
    assert not page.get("nextPageToken")


def test_list_shows_direct_children_and_dash_matches_any(parent):
    project = parent.split("/locations/")[0]
    here = create(parent)["name"]
    nested = create(f"{parent}/datasets/d")["name"]
    other_location = create(f"{project}/locations/m")["name"]

    assert list_names(parent) == [here]
    assert list_names(f"{parent}/datasets/d") == [nested]
    assert set(list_names(f"{project}/locations/-")) == {here, other_location}


def test_top_level_operations(parent):
    op_id = f"it-{uuid.uuid4().hex[:16]}"
    op = create("", operationId=op_id)
    name = op["name"]
    assert name == f"operations/{op_id}"
    assert get(name)["name"] == name
    assert list_names("", filter=f'name = "{name}"') == [name]
    assert rest("DELETE", f"/v1/{name}").status_code == 200
    assert_error(rest("GET", f"/v1/{name}"), 404, "NOT_FOUND")


# --------------------------------------------------------------------------
# Wait
# --------------------------------------------------------------------------


def test_wait_returns_as_soon_as_the_operation_is_done(parent):
    name = create(parent)["name"]
    completer = DelayedCompletion(name, delay=1.5, response={"answer": 42})

    started = time.monotonic()
    resp = rest("POST", f"/v1/{name}:wait", json={"timeout": "30s"})
    returned = time.monotonic()
    completed = completer.finish()

    assert resp.status_code == 200, resp.text
    op = resp.json()
    assert op["done"] is True
    assert op["response"] == {"@type": STRUCT_TYPE, "value": {"answer": 42}}
    assert returned - started >= 1.0, "wait returned before the operation was completed"
    assert returned - completed < 1.0, f"wait returned {returned - completed:.2f}s after completion"


@pytest.mark.parametrize("where", ["query", "body"])
def test_wait_returns_not_done_at_the_timeout(parent, where):
    name = create(parent)["name"]
    started = time.monotonic()
    if where == "query":
        resp = rest("POST", f"/v1/{name}:wait", params={"timeout": "1s"})
    else:
        resp = rest("POST", f"/v1/{name}:wait", json={"timeout": "1s"})
    elapsed = time.monotonic() - started

    assert resp.status_code == 200, resp.text
    op = resp.json()
    assert op["name"] == name
    assert not op.get("done", False)
    assert 0.9 <= elapsed < 5, f"wait with a 1s timeout took {elapsed:.2f}s"


def test_wait_on_a_done_operation_returns_at_once(parent):
    name = create(parent)["name"]
    done = complete(name, response={"ok": True})
    started = time.monotonic()
    resp = rest("POST", f"/v1/{name}:wait", json={"timeout": "30s"})
    assert time.monotonic() - started < 2
    assert resp.status_code == 200, resp.text
    assert resp.json() == done
