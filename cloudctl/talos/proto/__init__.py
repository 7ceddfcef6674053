"""Generated protobuf messages and grpclib stubs for the Talos API subset cloudctl uses.

Regenerate with ``python -m cloudctl.talos.proto.generate``; never edit ``*_pb2.py`` /
``*_grpc.py`` by hand.
"""
