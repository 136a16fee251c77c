"""docs/operations.md stays true: it lists every setting `pdp serve` has, and its systemd unit,
Kubernetes manifest and TOML file are ones `pdp serve` accepts (parsed with the real parser)."""

from __future__ import annotations

import argparse
import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdp.sidecar import config
from pdp.sidecar.command import OPTIONS, add_command, settings

DOC = Path(__file__).parents[1] / "docs" / "operations.md"


def block(language: str) -> str:
    (found,) = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    return str(found)


def serve(argv: list[str], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings `pdp serve ARGV` runs with (argparse exits on an unknown flag)."""
    parser = argparse.ArgumentParser(prog="pdp")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.command == "serve"
    return settings(args, environ or {})


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    for key, *_ in OPTIONS:
        assert f"`--{key.replace('_', '-')}`" in text, key
        assert f"`PDP_{key.upper()}`" in text, key
    for key, _ in config.SWITCHES:
        assert f"`--{key.replace('_', '-')}`" in text, key
        assert f"`PDP_{key.upper()}=1`" in text, key


def test_the_systemd_unit_runs_a_valid_serve() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read_string(block("ini"))
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/pdp")
    s = serve(argv[1:])
    assert s["bundle"] and s["listen"].startswith("127.0.0.1:")
    assert str(s["data_dir"]) in unit["Service"]["ReadWritePaths"]
    # systemd's stop timeout outlasts the drain
    assert float(unit["Service"]["TimeoutStopSec"]) > s["grace_seconds"]


def test_the_kubernetes_sidecar_runs_a_valid_serve_and_probes_its_ports() -> None:
    manifest = yaml.safe_load(block("yaml"))
    pod = manifest["spec"]["template"]["spec"]
    (pdp,) = [c for c in pod["containers"] if c["name"] == "pdp"]
    s = serve(pdp["args"])
    http_port = int(s["http_listen"].rpartition(":")[2])
    assert s["listen"].startswith("127.0.0.1:")  # gRPC only from inside the pod
    assert pdp["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": http_port}
    assert pdp["livenessProbe"]["tcpSocket"]["port"] == http_port
    assert {p["containerPort"] for p in pdp["ports"]} == {http_port}
    mounts = {m["mountPath"] for m in pdp["volumeMounts"]}
    assert str(s["data_dir"]) in mounts
    assert Path(s["bundle_verify_key"]).parent.as_posix() in mounts
    assert pod["terminationGracePeriodSeconds"] > s["grace_seconds"]
    documented = set(re.findall(r"`(OTEL_[A-Z_]+)", DOC.read_text()))
    assert {e["name"] for e in pdp["env"]} <= documented


def test_the_toml_example_holds_only_known_settings(tmp_path: Path) -> None:
    path = tmp_path / "pdp.toml"
    path.write_text(block("toml"))
    s = config.settings(path, {}, {}, OPTIONS)
    assert s["log_format"] == "json"
    path.write_text(block("toml") + 'listne = "x"\n')
    with pytest.raises(config.UnknownSetting, match="listne"):
        config.settings(path, {}, {}, OPTIONS)
