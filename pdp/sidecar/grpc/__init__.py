"""The gRPC edge of the sidecar: wire conversion, the one error-to-status mapping, admin
authentication, the decode guard and the servicers. The only package besides the composition root
(pdp.sidecar.app) that imports grpc."""
