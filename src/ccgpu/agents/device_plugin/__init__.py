"""The sandbox device plugin (kubelet device-plugin API v1beta1 over grpc.aio).

`api.proto` is written from reference/protocols.md §A; `api_pb2*.py(i)` are generated from it by
`scripts/gen_device_plugin_stubs.py` and committed. `server` holds the per-resource gRPC server and the node
agent, `allocation` the pure Allocate/GetPreferredAllocation decisions, `health` the device health checks.
"""
