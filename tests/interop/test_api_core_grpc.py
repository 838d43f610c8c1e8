"""google-api-core over gRPC: OperationsClient and the operation.from_gapic future."""

from __future__ import annotations

import pytest
from google.api_core import exceptions, operation
from google.protobuf import struct_pb2

from conftest import DelayedCompletion, complete, create, metadata_pb2, update

State = metadata_pb2.State


def metadata_of(op) -> metadata_pb2.OperationMetadata:
    md = metadata_pb2.OperationMetadata()
    assert op.metadata.Unpack(md)
    return md


def test_get_operation(grpc_ops_client, parent):
    name = create(parent, verb="import", target="tables/t")["name"]
    update(name, progressPercent=60, statusDetail="loading")

    op = grpc_ops_client.get_operation(name)
    assert op.name == name
    assert not op.done
    md = metadata_of(op)
    assert (md.state, md.verb, md.target) == (State.RUNNING, "import", "tables/t")
    assert (md.progress_percent, md.status_detail) == (60, "loading")


def test_list_operations(grpc_ops_client, parent):
    created = [create(parent)["name"] for _ in range(3)]
    assert [op.name for op in grpc_ops_client.list_operations(parent, "")] == created[::-1]


def test_cancel_operation(grpc_ops_client, parent):
    queued = create(parent, queue="q")["name"]
    grpc_ops_client.cancel_operation(queued)
    op = grpc_ops_client.get_operation(queued)
    assert op.done and op.error.code == 1
    assert metadata_of(op).state == State.CANCELLED

    running = create(parent)["name"]
    grpc_ops_client.cancel_operation(running)
    op = grpc_ops_client.get_operation(running)
    assert not op.done
    assert metadata_of(op).cancel_requested


def test_delete_operation(grpc_ops_client, parent):
    name = create(parent)["name"]
    grpc_ops_client.delete_operation(name)
    with pytest.raises(exceptions.NotFound) as caught:
        grpc_ops_client.get_operation(name, retry=None)
    assert caught.value.domain == "longrun.dev"
    assert list(grpc_ops_client.list_operations(parent, "")) == []


# --------------------------------------------------------------------------
# The operation future Google's generated clients hand out
# --------------------------------------------------------------------------


def future_for(grpc_ops_client, name: str) -> operation.Operation:
    return operation.from_gapic(
        grpc_ops_client.get_operation(name),
        grpc_ops_client,
        result_type=struct_pb2.Struct,
        metadata_type=metadata_pb2.OperationMetadata,
    )


def test_future_result_is_the_struct_response(grpc_ops_client, parent):
    name = create(parent, verb="export")["name"]
    future = future_for(grpc_ops_client, name)
    assert not future.done()
    assert future.metadata.state == State.RUNNING
    assert future.metadata.verb == "export"

    completer = DelayedCompletion(name, delay=1.5, response={"rows": 7, "path": "gs://b/o"})
    result = future.result(timeout=30)
    completer.finish()

    assert isinstance(result, struct_pb2.Struct)
    assert result["rows"] == 7
    assert result["path"] == "gs://b/o"
    assert future.metadata.state == State.SUCCEEDED
    assert not future.cancelled()


def test_future_raises_the_operation_error(grpc_ops_client, parent):
    name = create(parent)["name"]
    future = future_for(grpc_ops_client, name)

    completer = DelayedCompletion(name, delay=1.5, error={"code": 9, "message": "disk full"})
    with pytest.raises(exceptions.GoogleAPICallError) as caught:
        future.result(timeout=30)
    completer.finish()

    assert isinstance(caught.value, exceptions.FailedPrecondition)
    assert caught.value.message == "disk full"
    assert future.metadata.state == State.FAILED
    assert not future.cancelled()


def test_future_reports_cancelled(grpc_ops_client, parent):
    name = create(parent, queue="q")["name"]
    future = future_for(grpc_ops_client, name)
    assert future.metadata.state == State.QUEUED

    assert future.cancel() is True
    assert future.cancelled()
    assert future.done()
    with pytest.raises(exceptions.Cancelled):
        future.result(timeout=30)
    assert future.metadata.state == State.CANCELLED


def test_future_of_an_already_done_operation(grpc_ops_client, parent):
    name = create(parent)["name"]
    complete(name, response={"ok": True})
    future = future_for(grpc_ops_client, name)
    assert future.done()
    assert future.result(timeout=5)["ok"] is True
