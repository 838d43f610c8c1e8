"""longrun's protobuf types for Google's Python clients.

``import longrun`` adds longrun.v1 (``OperationMetadata``, ``State`` and the
producer and worker messages) to protobuf's default descriptor pool, with
the well-known types longrun's operations carry (``Struct``, ``Value``,
``Duration``, ...), so that Google's REST client and ``json_format`` can read
every operation longrun serves. The classes are also importable from here.
"""

from importlib import resources as _resources

# Registers the files longrun.v1 builds on, and the payload types untyped
# JSON becomes (Struct, Value, ListValue), in the default pool.
from google.longrunning import operations_pb2 as _operations_pb2  # noqa: F401
from google.protobuf import any_pb2 as _any_pb2  # noqa: F401
from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf import duration_pb2 as _duration_pb2  # noqa: F401
from google.protobuf import empty_pb2 as _empty_pb2  # noqa: F401
from google.protobuf import message_factory as _message_factory
from google.protobuf import struct_pb2 as _struct_pb2  # noqa: F401
from google.protobuf import timestamp_pb2 as _timestamp_pb2  # noqa: F401
from google.protobuf import wrappers_pb2 as _wrappers_pb2  # noqa: F401
from google.rpc import error_details_pb2 as _error_details_pb2  # noqa: F401
from google.rpc import status_pb2 as _status_pb2  # noqa: F401

__all__ = [
    "OperationMetadata",
    "State",
    "CreateOperationRequest",
    "UpdateOperationRequest",
    "UpdateOperationResponse",
    "CompleteOperationRequest",
    "ClaimOperationRequest",
    "ClaimOperationResponse",
    "ReleaseOperationRequest",
    "POOL",
]

#: The descriptor pool longrun's types are in: protobuf's default one.
POOL = _descriptor_pool.Default()


def _register() -> None:
    files = _descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(_resources.files(__name__).joinpath("descriptors.binpb").read_bytes())
    for file in files.file:
        try:
            POOL.FindFileByName(file.name)
        except KeyError:
            POOL.AddSerializedFile(file.SerializeToString())


_register()


def _message(name: str):
    return _message_factory.GetMessageClass(POOL.FindMessageTypeByName(name))


class _Enum:
    """A protobuf enum's names and numbers, like a generated ``_pb2`` enum."""

    def __init__(self, name: str):
        self._descriptor = POOL.FindEnumTypeByName(name)
        for value in self._descriptor.values:
            setattr(self, value.name, value.number)

    def Name(self, number: int) -> str:  # noqa: N802 (the generated code's spelling)
        return self._descriptor.values_by_number[number].name

    def Value(self, name: str) -> int:  # noqa: N802
        return self._descriptor.values_by_name[name].number


OperationMetadata = _message("longrun.v1.OperationMetadata")
State = _Enum("longrun.v1.State")
CreateOperationRequest = _message("longrun.v1.CreateOperationRequest")
UpdateOperationRequest = _message("longrun.v1.UpdateOperationRequest")
UpdateOperationResponse = _message("longrun.v1.UpdateOperationResponse")
CompleteOperationRequest = _message("longrun.v1.CompleteOperationRequest")
ClaimOperationRequest = _message("longrun.v1.ClaimOperationRequest")
ClaimOperationResponse = _message("longrun.v1.ClaimOperationResponse")
ReleaseOperationRequest = _message("longrun.v1.ReleaseOperationRequest")
