"""Capacity arithmetic of `pgmux plan` and the pool auto-sizing helper."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgmux.doctor.plan import POOLER_SHARE, Deployment, auto_pool_size, plan


def test_required_example_needs_75_and_does_not_fit() -> None:
    p = plan(Deployment(limit=20, dynos=5, processes=3, threads=5))
    assert p.needed == 75
    assert p.fits is False
    assert p.max_pool_size_per_process == 1  # 15 processes x 1 = 15 <= 20
    assert p.threads_wait
    assert p.with_pgmux.server_connections == 15
    assert p.with_pgmux.direct_headroom == 5
    assert p.with_pgmux.client_connections == 75
    assert p.with_pgmux.fits is True
    assert p.with_pgmux.pool_size_per_dyno == 3


def test_defaults_one_connection_per_thread() -> None:
    p = plan(Deployment(limit=20))
    assert (p.needed, p.fits, p.max_pool_size_per_process) == (1, True, 20)


def test_pool_size_overrides_threads() -> None:
    p = plan(Deployment(limit=100, dynos=2, processes=4, threads=16, pool_size=5))
    assert p.app == 40
    assert p.needed == 40
    assert p.fits


def test_preboot_doubles_the_app_part_only() -> None:
    p = plan(
        Deployment(limit=50, dynos=2, processes=2, threads=5, preboot=True, one_off=2, other=3)
    )
    assert p.app == 40
    assert p.needed == 45
    assert p.fits
    # (50 - 5) // (2 x 2 x 2) = 5
    assert p.max_pool_size_per_process == 5
    assert p.with_pgmux.pool_size_per_dyno == 37 // 4


def test_fixed_connections_larger_than_the_limit() -> None:
    p = plan(Deployment(limit=10, one_off=6, other=6))
    assert p.max_pool_size_per_process == 0
    assert not p.fits
    assert not p.with_pgmux.fits  # 12 direct > 10 - 7 headroom


def test_exactly_at_the_limit_fits() -> None:
    p = plan(Deployment(limit=20, dynos=2, processes=2, threads=5))
    assert p.needed == 20
    assert p.fits
    assert p.max_pool_size_per_process == 5


def test_json_keys() -> None:
    data = plan(Deployment(limit=20, dynos=5, processes=3, threads=5)).to_json()
    assert {"needed", "limit", "fits", "max_pool_size_per_process", "with_pgmux"} <= set(data)
    assert {"server_connections", "direct_headroom", "fits"} <= set(data["with_pgmux"])
    assert data["needed"] == 75 and data["limit"] == 20 and data["fits"] is False


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        plan(Deployment(limit=-1))


def test_a_limit_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan(Deployment(limit=0))


def test_no_more_server_connections_than_client_connections() -> None:
    # the example: 16 client connections must not become 375 server connections
    p = plan(Deployment(limit=500, dynos=2, processes=2, threads=4))
    assert p.with_pgmux.client_connections == 16
    assert p.with_pgmux.server_connections == 16
    assert p.with_pgmux.server_cap == 375
    assert p.with_pgmux.direct_headroom == 484
    assert p.with_pgmux.pool_size_per_dyno == 8  # each dyno's pgmux serves 2 x 4 clients


deployments = st.builds(
    Deployment,
    limit=st.integers(1, 5000),
    dynos=st.integers(0, 50),
    processes=st.integers(0, 32),
    threads=st.integers(0, 64),
    pool_size=st.none() | st.integers(0, 100),
    preboot=st.booleans(),
    one_off=st.integers(0, 200),
    other=st.integers(0, 200),
)


@given(deployments)
def test_plan_properties(d: Deployment) -> None:
    p = plan(d)
    w = p.with_pgmux
    # never more server connections than client connections, nor than the limit or its share
    assert 0 <= w.server_connections <= w.client_connections
    assert w.server_connections <= w.server_cap == math.floor(d.limit * POOLER_SHARE)
    assert w.server_connections + w.direct_headroom == d.limit
    assert w.client_connections == p.app
    # a sidecar pgmux per dyno never gets more than its dyno's clients or its share
    sidecars = max(1, d.dynos * (2 if d.preboot else 1))
    assert 0 <= w.pool_size_per_dyno * sidecars <= w.server_connections
    assert w.pool_size_per_dyno <= d.processes * d.effective_pool_size
    # what "fits" promises holds
    if w.fits:
        assert w.server_connections + w.direct_needed <= d.limit
        assert w.server_connections >= 1 or p.app == 0
    assert p.fits == (p.needed <= d.limit)
    # the largest pool that fits directly does fit, and one more would not
    largest = p.max_pool_size_per_process
    if d.app_multiplier:
        assert largest * d.app_multiplier + d.fixed <= d.limit or largest == 0
        assert (largest + 1) * d.app_multiplier + d.fixed > d.limit


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((100, 3, None, None), 72),  # 97 x 0.75
        ((100, 3, 20, None), 15),  # the role's limit bites first
        ((100, 3, None, 8), 6),  # the database's
        ((100, 3, 20, 8), 6),
        ((100, 3, 0, None), 1),  # at least 1
        ((3, 3, None, None), 1),
        ((20, 3, None, None), 12),
    ],
)
def test_auto_pool_size(args: tuple[int, int, int | None, int | None], expected: int) -> None:
    assert auto_pool_size(*args) == expected


def test_auto_pool_size_fraction() -> None:
    assert auto_pool_size(100, 0, None, None, fraction=0.5) == 50
