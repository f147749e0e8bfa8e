import anyio
import pytest

pytestmark = pytest.mark.anyio


async def test_sleeps_take_no_real_time() -> None:
    import time

    real = time.monotonic()
    virtual = anyio.current_time()
    await anyio.sleep(3600)
    assert anyio.current_time() - virtual >= 3600
    assert time.monotonic() - real < 5
