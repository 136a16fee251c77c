"""The sidecar process: the use cases (service, writer), their durable state (store: the changelog
in SQLite or PostgreSQL; follower: applying it in order),
audit, metrics, the bundle reloader, the gRPC edge (grpc/) and the composition root (app).

The only package that touches gRPC, HTTP, SQLite and the file watcher. It may import the engine,
the bundle loader, the model and the token package; nothing outside it imports it except the CLI.
"""
