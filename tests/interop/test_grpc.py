"""Raw gRPC on the shared port: Operations stubs, longrun's Control API, health, reflection."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, descriptor_pool, duration_pb2, message_factory, struct_pb2
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from longrun.v1 import control_pb2

from conftest import STRUCT_TYPE, DelayedCompletion, create, get

RPC_TIMEOUT = 30  # seconds, for calls that should return at once


def test_health_is_serving(grpc_channel):
    health = health_pb2_grpc.HealthStub(grpc_channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_wait_operation_blocks_until_completion(operations_stub, parent):
    name = create(parent)["name"]
    completer = DelayedCompletion(name, delay=1.5, response={"answer": 42})

    started = time.monotonic()
    op = operations_stub.WaitOperation(
        operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=30)),
        timeout=40,
    )
    returned = time.monotonic()
    completed = completer.finish()

    assert op.done
    assert op.response.type_url == STRUCT_TYPE
    response = struct_pb2.Struct()
    assert op.response.Unpack(response)
    assert response["answer"] == 42
    assert returned - started >= 1.0, "WaitOperation returned before the operation was completed"
    assert returned - completed < 1.0, f"returned {returned - completed:.2f}s after completion"


def test_wait_operation_returns_not_done_at_timeout(operations_stub, parent):
    name = create(parent)["name"]
    started = time.monotonic()
    op = operations_stub.WaitOperation(
        operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=1)),
        timeout=RPC_TIMEOUT,
    )
    elapsed = time.monotonic() - started
    assert op.name == name
    assert not op.done
    assert 0.9 <= elapsed < 5, f"WaitOperation with a 1s timeout took {elapsed:.2f}s"


def test_list_operations_pages(operations_stub, parent):
    created = [create(parent)["name"] for _ in range(5)]
    seen, token, pages = [], "", 0
    while True:
        page = operations_stub.ListOperations(
            operations_pb2.ListOperationsRequest(name=parent, page_size=2, page_token=token),
            timeout=RPC_TIMEOUT,
        )
        pages += 1
        seen += [op.name for op in page.operations]
        token = page.next_page_token
        if not token:
            break
        assert pages < 10, "paging does not end"
    assert pages == 3
    assert seen == created[::-1]


def test_negative_page_size_is_invalid_argument(operations_stub, parent):
    with pytest.raises(grpc.RpcError) as caught:
        operations_stub.ListOperations(
            operations_pb2.ListOperationsRequest(name=parent, page_size=-1), timeout=RPC_TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_control_api_over_grpc_is_visible_over_rest(control_stub, parent):
    """Producer calls in binary protobuf; the consumer reads proto3 JSON."""
    op = control_stub.CreateOperation(
        control_pb2.CreateOperationRequest(parent=parent, verb="train", target="models/m"),
        timeout=RPC_TIMEOUT,
    )
    assert op.name.startswith(f"{parent}/operations/")
    assert not op.done

    reply = control_stub.UpdateOperation(
        control_pb2.UpdateOperationRequest(name=op.name, progress_percent=50),
        timeout=RPC_TIMEOUT,
    )
    assert not reply.cancel_requested
    assert get(op.name)["metadata"]["progressPercent"] == 50

    result = struct_pb2.Struct()
    result.update({"accuracy": 0.5, "labels": ["cat", "dog"]})
    packed = any_pb2.Any()
    packed.Pack(result)
    done = control_stub.CompleteOperation(
        control_pb2.CompleteOperationRequest(name=op.name, response=packed),
        timeout=RPC_TIMEOUT,
    )
    assert done.done

    as_json = get(op.name)
    assert as_json["done"] is True
    assert as_json["response"] == {
        "@type": STRUCT_TYPE,
        "value": {"accuracy": 0.5, "labels": ["cat", "dog"]},
    }
    assert as_json["metadata"]["state"] == "SUCCEEDED"


def test_control_api_error_over_grpc(control_stub, parent):
    op = control_stub.CreateOperation(
        control_pb2.CreateOperationRequest(parent=parent), timeout=RPC_TIMEOUT
    )
    control_stub.CompleteOperation(
        control_pb2.CompleteOperationRequest(
            name=op.name, error=status_pb2.Status(code=9, message="disk full")
        ),
        timeout=RPC_TIMEOUT,
    )
    as_json = get(op.name)
    assert as_json["error"]["code"] == 9
    assert as_json["error"]["message"] == "disk full"

    with pytest.raises(grpc.RpcError) as caught:
        control_stub.CreateOperation(
            control_pb2.CreateOperationRequest(
                parent=parent, operation_id=op.name.rsplit("/", 1)[1]
            ),
            timeout=RPC_TIMEOUT,
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


# --------------------------------------------------------------------------
# Reflection: the other way for a user to get longrun's types
# --------------------------------------------------------------------------


def test_reflection_serves_longrun_types(grpc_channel, operations_stub, parent):
    """Loads OperationMetadata over gRPC reflection into a private pool.

    A separate pool, so the type is not registered twice in the default pool
    (conftest put the generated module there already).
    """
    database = ProtoReflectionDescriptorDatabase(grpc_channel)
    services = database.get_services()
    assert "google.longrunning.Operations" in services

    file_proto = database.FindFileContainingSymbol("longrun.v1.OperationMetadata")
    assert file_proto.package == "longrun.v1"
    messages = {m.name: m for m in file_proto.message_type}
    fields = {f.name: f.number for f in messages["OperationMetadata"].field}
    assert fields["progress_percent"] == 10

    pool = descriptor_pool.DescriptorPool(database)
    descriptor = pool.FindMessageTypeByName("longrun.v1.OperationMetadata")
    assert "progress_percent" in descriptor.fields_by_name

    # A message class built from the reflected descriptor decodes live metadata.
    name = create(parent, verb="reflect")["name"]
    op = operations_stub.GetOperation(
        operations_pb2.GetOperationRequest(name=name), timeout=RPC_TIMEOUT
    )
    metadata = message_factory.GetMessageClass(descriptor)()
    assert op.metadata.Unpack(metadata)
    assert metadata.verb == "reflect"


def test_reflection_v1_lists_services(grpc_channel):
    """grpcurl and most tools speak grpc.reflection.v1 (same messages as v1alpha)."""
    call = grpc_channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    replies = list(
        call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=RPC_TIMEOUT)
    )
    assert len(replies) == 1
    names = {s.name for s in replies[0].list_services_response.service}
    assert "google.longrunning.Operations" in names


README_REFLECTION_RECIPE = '''
import sys
import grpc
from google.protobuf import descriptor_pool, timestamp_pb2  # timestamp_pb2 loads a dependency
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

endpoint, name = sys.argv[1], sys.argv[2]
db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(endpoint.removeprefix("http://")))
pool = descriptor_pool.Default()
for file_name in ["longrun/v1/metadata.proto"]:
    pool.Add(db.FindFileByName(file_name))

from google.api_core import operations_v1
from google.auth.credentials import AnonymousCredentials
transport = operations_v1.OperationsRestTransport(host=endpoint, credentials=AnonymousCredentials())
client = operations_v1.AbstractOperationsClient(transport=transport)
print(client.get_operation(name).metadata.type_url)
'''


def test_readme_reflection_recipe_lets_the_rest_client_parse_metadata(endpoint, parent):
    """The README's second way to load longrun's types, in a fresh interpreter
    whose descriptor pool has never seen them."""
    name = create(parent)["name"]
    result = subprocess.run(
        [sys.executable, "-c", README_REFLECTION_RECIPE, endpoint, name],
        capture_output=True,
        text=True,
        timeout=60,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "type.googleapis.com/longrun.v1.OperationMetadata"
