"""The generated tp.v1 messages and stubs (made from proto/ by generate_stubs.sh, never checked in)."""

try:
    from tp.v1 import tensor_product_pb2 as pb  # noqa: F401
    from tp.v1 import tensor_product_pb2_grpc as pb_grpc  # noqa: F401
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        "tpserve needs the Python stubs generated from proto/tp/v1/tensor_product.proto: run "
        "client/python/generate_stubs.sh OUT_DIR (Debian's python3-grpc-tools) and put OUT_DIR on "
        "PYTHONPATH next to client/python (the CMake build writes them to build/client/python/gen)"
    ) from error
