"""google-api-python-client, built from the server's own discovery document."""

from __future__ import annotations

import time
import uuid

import pytest
from googleapiclient.errors import HttpError

from conftest import METADATA_TYPE, STRUCT_TYPE, DelayedCompletion, complete, create


@pytest.fixture
def operations(discovery):
    return discovery.projects().locations().operations()


def test_get(operations, parent):
    created = create(parent, verb="export", target="datasets/d1")
    op = operations.get(name=created["name"]).execute()
    assert op == created
    assert op["metadata"]["@type"] == METADATA_TYPE
    assert op["metadata"]["state"] == "RUNNING"


def test_list_and_list_next_over_pages(operations, parent):
    created = [create(parent)["name"] for _ in range(5)]

    seen, pages = [], 0
    request = operations.list(name=parent, pageSize=2)
    while request is not None:
        response = request.execute()
        pages += 1
        seen += [op["name"] for op in response.get("operations", [])]
        request = operations.list_next(request, response)
        assert pages < 10, "paging does not end"

    assert pages == 3
    assert seen == created[::-1]


def test_cancel(operations, parent):
    queued = create(parent, queue="q")["name"]
    assert operations.cancel(name=queued).execute() == {}
    op = operations.get(name=queued).execute()
    assert op["done"] is True
    assert op["error"]["code"] == 1
    assert op["metadata"]["state"] == "CANCELLED"


def test_wait_times_out_with_query_timeout(operations, parent):
    name = create(parent)["name"]
    started = time.monotonic()
    op = operations.wait(name=name, timeout="1s").execute()
    elapsed = time.monotonic() - started
    assert op["name"] == name
    assert not op.get("done", False)
    assert 0.9 <= elapsed < 5, f"wait with timeout=1s took {elapsed:.2f}s"


def test_wait_returns_on_completion(operations, parent):
    name = create(parent)["name"]
    completer = DelayedCompletion(name, delay=1.5, response={"answer": 42})
    op = operations.wait(name=name, timeout="30s").execute()
    completer.finish()
    assert op["done"] is True
    assert op["response"] == {"@type": STRUCT_TYPE, "value": {"answer": 42}}


def test_delete_then_get_is_http_error_404(operations, parent):
    name = create(parent)["name"]
    assert operations.delete(name=name).execute() == {}

    with pytest.raises(HttpError) as caught:
        operations.get(name=name).execute()
    error = caught.value
    assert error.status_code == 404
    assert error.reason  # error.message from the envelope
    assert any(d.get("domain") == "longrun.dev" for d in error.error_details)


def test_bad_filter_is_http_error_400_with_readable_message(operations, parent):
    with pytest.raises(HttpError) as caught:
        operations.list(name=parent, filter="done = maybe").execute()
    assert caught.value.status_code == 400
    assert caught.value.reason


def test_top_level_operations(discovery):
    op_id = f"it-{uuid.uuid4().hex[:16]}"
    name = create("", operationId=op_id)["name"]
    assert name == f"operations/{op_id}"
    top = discovery.operations()

    assert top.get(name=name).execute()["name"] == name
    # Top-level list is GET /v1/operations; as in Google's documents, `name`
    # is the collection itself.
    listed = top.list(name="operations", filter=f'name = "{name}"').execute()
    assert [op["name"] for op in listed.get("operations", [])] == [name]

    complete(name, response={"ok": True})
    assert top.wait(name=name, timeout="5s").execute()["done"] is True
    assert top.delete(name=name).execute() == {}
    with pytest.raises(HttpError) as caught:
        top.get(name=name).execute()
    assert caught.value.status_code == 404
