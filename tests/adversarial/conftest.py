"""Fixtures for the adversarial suite: a factory of real `pdp serve` processes and a writable copy
of the example bundle."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .serve import ServeFactory

EXAMPLE = Path(__file__).parents[2] / "bundles" / "saas"


@pytest.fixture
def pdp_serve(tmp_path: Path) -> Iterator[ServeFactory]:
    factory = ServeFactory(tmp_path / "serve")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def saas_bundle(tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(EXAMPLE, dest)
    return dest
