"""The provider contract of alphaswarm-controller, free of gRPC and of any cloud SDK.

Provider authors depend on this package only; the gRPC service lives in
``alphaswarm_controller``.
"""
