"""Fixtures: a real sidecar on an ephemeral loopback port, built from a copy of the test bundle,
with real token keys: the `admin` stub carries a bearer token holding the `admin` scope."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2_grpc
from pdp.sidecar.app import App
from pdp.sidecar.config import Config
from pdp.tokens import TokenConfig, init_key_directory

from .support import AUDIENCE, ISSUER, Authed, mint

BASIC = Path(__file__).parent / "bundles" / "basic"


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(BASIC, dest)
    return dest


@pytest.fixture
def token_config(tmp_path: Path) -> TokenConfig:
    """Shared by every app a test makes, so tokens and revocations outlive a restart."""
    init_key_directory(tmp_path / "keys")
    return TokenConfig(
        key_dir=tmp_path / "keys",
        db_path=tmp_path / "tokens.db",
        issuer=ISSUER,
        audience=AUDIENCE,
        maintenance_interval=0.2,
    )


@pytest.fixture
def make_app(
    tmp_path: Path, bundle_dir: Path, token_config: TokenConfig
) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(**overrides: object) -> App:
        fields: dict[str, object] = {
            "bundle": bundle_dir,
            "listen": "127.0.0.1:0",
            "data_dir": tmp_path / "data",
            "watch": False,
            "workers": 8,
            "tokens": token_config,
        }
        fields.update(overrides)
        app = App(Config(**fields))  # type: ignore[arg-type]
        app.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop(0.5)


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


@pytest.fixture
def channel(app: App) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(app.grpc_target) as ch:
        yield ch


@pytest.fixture
def authz(channel: grpc.Channel) -> pdp_pb2_grpc.AuthorizerStub:
    return pdp_pb2_grpc.AuthorizerStub(channel)


@pytest.fixture
def admin_token(app: App) -> str:
    return mint(app, scopes=("admin",), tenant="*")  # an operator: bound to no tenant


@pytest.fixture
def admin(channel: grpc.Channel, admin_token: str) -> Authed:
    return Authed(pdp_pb2_grpc.AdminStub(channel), admin_token)
