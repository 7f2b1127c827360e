"""Server reflection that serves the protos' comments.

Generated ``_pb2`` modules carry descriptors without source info, and the stock
reflection servicer re-serializes descriptors without it too, so ``grpcurl
describe`` would show no comments. The stub generator also writes a descriptor
set with source info; this servicer answers with those files wherever the
stock one would send the comment-less copy. The set is read at the first reflection
request, not at start-up (importlib.resources and the parse: ~10 ms before SERVING).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

# Not used by any service, but part of the API: `grpcurl describe
# alphaswarm.provider.v1.ErrorReason` finds the catalogue through the default pool.
from alphaswarm.provider.v1 import error_reason_pb2  # noqa: F401

DESCRIPTOR_SET = "descriptor_set.binpb"


@functools.cache
def documented_files() -> dict[str, bytes]:
    """File name -> serialized FileDescriptorProto with comments."""
    from importlib import resources

    raw = resources.files("alphaswarm.provider.v1").joinpath(DESCRIPTOR_SET).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(raw).file
    return {f.name: f.SerializeToString() for f in files}


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    def __init__(
        self, service_names: tuple[str, ...], documented: Callable[[], dict[str, bytes]]
    ) -> None:
        super().__init__(service_names)
        self._documented = documented

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: Any,
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                documented = self._documented()
                files = response.file_descriptor_response.file_descriptor_proto
                for index, raw in enumerate(files):
                    name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                    files[index] = documented.get(name, raw)
            yield response


def enable(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    servicer = DocumentedReflectionServicer(
        (*service_names, reflection.SERVICE_NAME), documented_files
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
