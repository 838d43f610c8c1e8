"""Filters on a producer's own metadata and response fields, through Google's
clients. The server was started with the descriptor set of
tests/interop/protos (LONGRUN_EXAMPLE_TYPES tells the suite it was)."""

from __future__ import annotations

import os

import pytest
from google.api_core import exceptions

from conftest import complete, create

pytestmark = pytest.mark.skipif(
    not os.environ.get("LONGRUN_EXAMPLE_TYPES"),
    reason="the server was not started with tests/interop/protos registered",
)

from example.imports.v1 import imports_pb2  # noqa: E402  (registers the types for the REST client)

METADATA = "type.googleapis.com/example.imports.v1.ImportMetadata"
RESPONSE = "type.googleapis.com/example.imports.v1.ImportResponse"


@pytest.fixture
def imports(parent):
    """Three imports: fast (done, 1200 rows), slow (reading), fresh (no metadata fields set)."""
    fast = create(parent, metadata={"@type": METADATA, "rowsRead": "1200", "phase": "WRITING",
                                    "elapsed": "1.5s", "tags": ["csv", "nightly"]})["name"]
    complete(fast, response={"@type": RESPONSE, "rowCount": "1200", "errorRate": 0.01})
    slow = create(parent, metadata={"@type": METADATA, "rowsRead": "40", "phase": "READING",
                                    "elapsed": "90s"})["name"]
    fresh = create(parent, metadata={"@type": METADATA})["name"]
    create(parent)  # standard metadata: has none of these fields
    return fast, slow, fresh


@pytest.mark.parametrize(
    "text, expected",
    [
        ("metadata.rowsRead > 100", ["fast"]),
        ("metadata.rowsRead = 0", ["fresh"]),
        ("metadata.phase = READING", ["slow"]),
        ("metadata.phase != READING", ["fresh", "fast"]),
        ("metadata.elapsed > 60s", ["slow"]),
        # A Duration is a message: unset in "fresh", so it never matches.
        ("metadata.elapsed < \"2.5s\"", ["fast"]),
        ("metadata.tags:nightly", ["fast"]),
        ("response.rowCount >= 1000 AND response.errorRate < 0.05", ["fast"]),
        ("NOT response.rowCount:*", None),  # everything but fast, incl. the standard one
    ],
)
def test_rest_and_grpc_clients_filter_on_registered_fields(
    rest_ops_client, grpc_ops_client, parent, imports, text, expected
):
    fast, slow, fresh = imports
    ids = {fast: "fast", slow: "slow", fresh: "fresh"}
    for client in (rest_ops_client, grpc_ops_client):
        got = [ids.get(op.name, "other") for op in client.list_operations(parent, text)]
        if expected is None:
            assert got == ["other", "fresh", "slow"], (text, got)
        else:
            assert got == expected, (text, got)
    # The REST client decodes the typed metadata it filtered on.
    op = rest_ops_client.get_operation(slow)
    metadata = imports_pb2.ImportMetadata()
    assert op.metadata.Unpack(metadata) and metadata.rows_read == 40


def test_misspelled_custom_field_is_invalid_argument(rest_ops_client, grpc_ops_client, parent):
    # REST errors map by HTTP status (400: BadRequest), gRPC ones by code
    # (INVALID_ARGUMENT, a BadRequest too).
    for client in (rest_ops_client, grpc_ops_client):
        with pytest.raises(exceptions.BadRequest) as raised:
            list(client.list_operations(parent, "metadata.rowsRed > 1"))
        assert "no registered metadata or response type" in str(raised.value)
