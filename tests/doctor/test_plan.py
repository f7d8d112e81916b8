"""Capacity arithmetic of `pgmux plan` and the pool auto-sizing helper."""

from __future__ import annotations

import pytest

from pgmux.doctor.plan import Deployment, auto_pool_size, plan


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
