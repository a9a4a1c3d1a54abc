"""One platform over the fixed evaluation dataset for the module tests that only read it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sensorium.platform import Sensorium
from tests.agent.dataset import build


@pytest.fixture(scope="package")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensorium]:
    p = build(Path(tmp_path_factory.mktemp("agent")) / "data")
    yield p
    p.close()
