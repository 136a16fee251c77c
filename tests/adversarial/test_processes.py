"""`pdp serve --processes 2`: two server processes on one port, supervised by their parent.

What bad luck (or an attacker) tries: land on the process that has not seen a write yet, take the
port first and hope the sidecar shares it, kill a child mid-serve, kill the parent and hope its
children live on holding the port.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.struct_pb2 import Struct

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import check_request
from pdp.model import RelationTuple
from pdp.sidecar.grpc.process import IDENTIFY
from pdp.sidecar.grpc.wire import tuple_message

from .saas import document, user
from .serve import Served, ServeFactory, operator_token, wait_for

PROCESSES = ["--processes", "2", "--consistency-wait", "5", "--grace-seconds", "2"]


def _pids(served: Served) -> set[int]:
    """The children's pids, from the parent's ready line (`... processes=2 pids=A,B`)."""
    return {int(p) for p in served.ready_line.split("pids=")[1].split()[0].split(",")}


@contextmanager
def _connection(served: Served) -> Iterator[tuple[grpc.Channel, int]]:
    """A fresh connection (a channel of its own, no subchannel sharing) and the pid serving it."""
    channel = grpc.insecure_channel(
        served.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        identify = channel.unary_unary(
            IDENTIFY,
            request_serializer=Empty.SerializeToString,
            response_deserializer=Struct.FromString,
        )
        yield channel, int(identify(Empty(), timeout=10)["pid"])
    finally:
        channel.close()


def _on(served: Served, pid: int, attempts: int = 400) -> grpc.Channel:
    """A connection that landed on process `pid` (the kernel picks: open fresh ones until one
    does). The caller closes it."""
    for _ in range(attempts):
        channel = grpc.insecure_channel(
            served.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        identify = channel.unary_unary(
            IDENTIFY,
            request_serializer=Empty.SerializeToString,
            response_deserializer=Struct.FromString,
        )
        if int(identify(Empty(), timeout=10)["pid"]) == pid:
            return channel
        channel.close()
    raise AssertionError(f"no connection reached pid {pid} in {attempts} attempts")


def _gone(pid: int) -> bool:
    """The process has exited (a zombie left to a parent that does not reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def test_connections_reach_every_process_and_each_decides(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle, args=PROCESSES)
    children = _pids(served)
    assert len(children) == 2 and os.getpid() not in children
    seen: set[int] = set()
    req = check_request(user("acme/eve", roles=frozenset({"viewer"})), "read", document("d1"))
    for _ in range(400):
        with _connection(served) as (channel, pid):
            seen.add(pid)
            resp = pdp_pb2_grpc.AuthorizerStub(channel).Check(req, timeout=10)
            assert resp.decision == pdp_pb2.EFFECT_ALLOW
        if seen == children:
            break
    assert seen == children
    # the HTTP side is shared the same way: the token endpoint answers whichever process it hits
    for _ in range(4):
        operator_token(pdp_serve, served)
    assert served.stop() == 0
    wait_for(lambda: all(_gone(p) for p in children))


def test_a_write_at_one_process_is_seen_at_the_other(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    """Both follow the store's changelog: the revision a write returns is a consistency token at
    the other process, for a grant and for a revocation."""
    served = pdp_serve.start(saas_bundle, args=PROCESSES)
    first, second = sorted(_pids(served))
    token = operator_token(pdp_serve, served)
    zed, doc = user("zed"), document("procs-1")
    grant = "document:procs-1#viewer@user:zed"
    at_first, at_second = _on(served, first), _on(served, second)
    try:
        reader = pdp_pb2_grpc.AuthorizerStub(at_second)
        ask = check_request(zed, "read", doc)
        assert reader.Check(ask, timeout=10).decision == pdp_pb2.EFFECT_DENY
        written = _write_via(at_first, token, writes=[grant])
        ask.min_tuple_revision = written
        fresh = reader.Check(ask, timeout=10)
        assert (fresh.decision, fresh.tuple_revision) == (pdp_pb2.EFFECT_ALLOW, written)
        # and back: a revocation written at the second is a token at the first
        revoked = _write_via(at_second, token, deletes=[grant])
        ask.min_tuple_revision = revoked
        after = pdp_pb2_grpc.AuthorizerStub(at_first).Check(ask, timeout=10)
        assert after.decision == pdp_pb2.EFFECT_DENY and after.tuple_revision >= revoked
    finally:
        at_first.close()
        at_second.close()
    assert served.stop() == 0


def _write_via(
    channel: grpc.Channel,
    token: str,
    writes: list[str] | None = None,
    deletes: list[str] | None = None,
) -> int:
    """`Served.write` over a given connection (so at a given process)."""
    resp = pdp_pb2_grpc.AdminStub(channel).WriteTuples(
        pdp_pb2.WriteTuplesRequest(
            writes=[tuple_message(RelationTuple.parse(t)) for t in writes or ()],
            deletes=[tuple_message(RelationTuple.parse(t)) for t in deletes or ()],
        ),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=10,
    )
    return int(resp.tuple_revision)


def test_killing_the_parent_stops_its_children(pdp_serve: ServeFactory, saas_bundle: Path) -> None:
    served = pdp_serve.start(saas_bundle, args=PROCESSES)
    children = _pids(served)
    served.kill()  # SIGKILL: the parent runs no code of its own on the way out
    wait_for(lambda: all(_gone(p) for p in children), timeout=20)
    # nothing listens any more: the port is free for a plain bind
    host, port = served.grpc_target.rsplit(":", 1)
    wait_for(lambda: _bindable(host, int(port)), timeout=10)


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _refused_on(pdp_serve: ServeFactory, saas_bundle: Path, holder: socket.socket) -> None:
    port = holder.getsockname()[1]
    log = pdp_serve.root / f"refused-{port}.log"
    proc = pdp_serve.popen(saas_bundle, args=[*PROCESSES, "--listen", f"127.0.0.1:{port}"], log=log)
    assert proc.wait(30) == 1
    assert proc.stdout is not None and "pdp: serving" not in proc.stdout.read()
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in log.read_text()


def test_an_unrelated_process_on_the_port_is_refused(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    """Plain, and with SO_REUSEPORT set (as grpcio sets it by default): neither is shared."""
    for reuse_port in (False, True):
        with socket.socket() as holder:
            if reuse_port:
                holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            holder.bind(("127.0.0.1", 0))
            holder.listen(8)
            _refused_on(pdp_serve, saas_bundle, holder)


def test_a_killed_child_is_restarted(pdp_serve: ServeFactory, saas_bundle: Path) -> None:
    """Documented: a child that dies is restarted; the other serves meanwhile."""
    served = pdp_serve.start(saas_bundle, args=PROCESSES)
    children = _pids(served)
    victim = min(children)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "restarted as pid" in served.log_text(), timeout=20)
    line = next(ln for ln in served.log_text().splitlines() if "restarted as pid" in ln)
    replacement = int(line.rsplit("restarted as pid", 1)[1].split()[0])
    assert replacement not in children and _gone(victim)
    expected = (children - {victim}) | {replacement}
    req = check_request(user("acme/eve", roles=frozenset({"viewer"})), "read", document("d1"))
    seen: set[int] = set()

    def both_serve() -> bool:
        with _connection(served) as (channel, pid):
            resp = pdp_pb2_grpc.AuthorizerStub(channel).Check(req, timeout=10)
            assert resp.decision == pdp_pb2.EFFECT_ALLOW
            seen.add(pid)
        return seen == expected

    wait_for(both_serve, timeout=30, interval=0)
    assert served.running
    assert served.stop() == 0
    wait_for(lambda: all(_gone(p) for p in expected))


def test_processes_need_a_tcp_port_and_at_least_one(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    """A unix socket cannot be shared by port; zero processes is not a sidecar."""
    for args, message in (
        (["--processes", "2", "--listen", f"unix:{pdp_serve.root}/p.sock"], "not a unix socket"),
        (["--processes", "0"], "--processes must be at least 1"),
    ):
        log = pdp_serve.root / f"bad-{args[1]}.log"
        proc = pdp_serve.popen(saas_bundle, args=args, log=log)
        assert proc.wait(30) == 2
        assert message in log.read_text()
