"""The platform on ``log_backend = "nats"``: writes go through JetStream, and after a crash (no
flush, no close) a restart replays them from the stream: every point read back exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensorium.errors import ConfigError
from sensorium.platform import Sensorium
from tests.conftest import FakeClock, make_settings
from tests.log.test_log_contract import NATS_URL, require_nats
from tests.test_platform import count, lp


@pytest.fixture
def stream() -> Iterator[str]:
    require_nats()
    from sensorium.log.nats import JetStreamLog

    name = f"plat_{uuid.uuid4().hex[:12]}"
    yield name
    j = JetStreamLog(NATS_URL, name)
    j.delete_stream()
    j.close()


def test_points_survive_a_crash_through_jetstream_once(
    data_dir: Path, clock: FakeClock, stream: str
) -> None:
    from sensorium.log.nats import JetStreamLog

    def settings() -> object:
        return make_settings(
            data_dir, log_backend="nats", nats_url=NATS_URL, nats_stream=stream, nats_partitions=2
        )

    p = Sensorium(settings(), clock=clock, background=False)  # type: ignore[arg-type]
    assert isinstance(p.wal, JetStreamLog)
    assert not (data_dir / "wal").exists()
    p.write(lp(100))
    p.flush(force=True)
    p.write(lp(40, start=100))
    p.write(lp(10, start=140, device="d2"))
    assert p.wal.next_offset > 1
    # a crash: no flush, no close of the platform; the OS releases the lock
    import os

    os.close(p._lock_fd)  # type: ignore[arg-type]
    p.wal.close()
    p._dl_store.close()
    p.latest_cache.close()
    p2 = Sensorium(settings(), clock=clock, background=False)  # type: ignore[arg-type]
    try:
        assert p2.replayed >= 1
        assert count(p2) == 150
        assert count(p2, "SELECT count(DISTINCT (device_id, seq)) FROM climate") == 150
        p2.flush(force=True)
        assert count(p2) == 150
    finally:
        p2.close()
    p3 = Sensorium(settings(), clock=clock, background=False)  # type: ignore[arg-type]
    try:
        assert p3.replayed == 0  # a clean shutdown purged what the lake holds
        assert count(p3) == 150
    finally:
        p3.close()
    # the data directory now belongs to JetStream: opening it on the WAL is refused
    with pytest.raises(ConfigError, match="log backend"):
        Sensorium(make_settings(data_dir), clock=clock, background=False)
