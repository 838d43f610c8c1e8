"""google-api-core's REST operations client (AbstractOperationsClient + OperationsRestTransport).

It parses responses strictly: an unknown JSON field or an Any of a type missing
from the default descriptor pool fails the call, so every call here also checks
the wire shape.
"""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.protobuf import struct_pb2

from conftest import METADATA_TYPE, STRUCT_TYPE, complete, create, metadata_pb2, update

State = metadata_pb2.State


def unpack_metadata(op) -> metadata_pb2.OperationMetadata:
    assert op.metadata.type_url == METADATA_TYPE
    md = metadata_pb2.OperationMetadata()
    assert op.metadata.Unpack(md)
    return md


def test_get_operation(rest_ops_client, parent):
    name = create(parent, verb="export", target="datasets/d1")["name"]
    update(name, progressPercent=25)

    op = rest_ops_client.get_operation(name)
    assert op.name == name
    assert not op.done
    assert op.WhichOneof("result") is None
    md = unpack_metadata(op)
    assert md.state == State.RUNNING
    assert md.verb == "export"
    assert md.target == "datasets/d1"
    assert md.progress_percent == 25
    assert md.create_time.seconds > 0


def test_list_operations_pages_through_everything(rest_ops_client, parent):
    created = [create(parent)["name"] for _ in range(5)]

    pager = rest_ops_client.list_operations(parent, "", page_size=2)
    pages = list(pager.pages)
    assert [len(p.operations) for p in pages] == [2, 2, 1]
    assert [bool(p.next_page_token) for p in pages] == [True, True, False]
    seen = [op.name for p in pages for op in p.operations]
    assert seen == created[::-1]

    # Iterating the pager directly resolves pages on its own.
    again = [op.name for op in rest_ops_client.list_operations(parent, "", page_size=2)]
    assert again == seen


def test_cancel_operation(rest_ops_client, parent):
    queued = create(parent, queue="q")["name"]
    rest_ops_client.cancel_operation(queued)
    op = rest_ops_client.get_operation(queued)
    assert op.done
    assert op.error.code == 1
    assert unpack_metadata(op).state == State.CANCELLED

    running = create(parent)["name"]
    rest_ops_client.cancel_operation(running)
    op = rest_ops_client.get_operation(running)
    assert not op.done
    assert unpack_metadata(op).cancel_requested


def test_delete_operation(rest_ops_client, parent):
    name = create(parent)["name"]
    rest_ops_client.delete_operation(name)
    with pytest.raises(exceptions.NotFound) as caught:
        rest_ops_client.get_operation(name)
    assert caught.value.code == 404
    assert caught.value.domain == "longrun.dev"
    assert [op.name for op in rest_ops_client.list_operations(parent, "")] == []


def test_struct_response_unpacks(rest_ops_client, parent):
    name = create(parent)["name"]
    complete(name, response={"rows": 3, "tags": ["a", "b"], "nested": {"ok": True}})

    op = rest_ops_client.get_operation(name)
    assert op.done
    assert op.WhichOneof("result") == "response"
    assert op.response.type_url == STRUCT_TYPE
    response = struct_pb2.Struct()
    assert op.response.Unpack(response)
    assert response["rows"] == 3
    assert list(response["tags"]) == ["a", "b"]
    assert response["nested"]["ok"] is True
    assert unpack_metadata(op).state == State.SUCCEEDED


def test_error_result_is_a_plain_status(rest_ops_client, parent):
    name = create(parent)["name"]
    complete(name, error={"code": 9, "message": "disk full"})

    op = rest_ops_client.get_operation(name)
    assert op.done
    assert op.WhichOneof("result") == "error"
    assert op.error.code == 9
    assert op.error.message == "disk full"
    assert unpack_metadata(op).state == State.FAILED


def test_bad_filter_raises_bad_request_with_error_info(rest_ops_client, parent):
    with pytest.raises(exceptions.BadRequest) as caught:
        list(rest_ops_client.list_operations(parent, "done = maybe"))
    assert caught.value.code == 400
    assert caught.value.domain == "longrun.dev"
    assert caught.value.reason
