"""`python -m tests._event_writer URL JOB WRITER COUNT`: appends COUNT events to JOB, 8 at a
time, as one of several processes writing the same store (the gap-free numbering test)."""

from __future__ import annotations

import asyncio
import sys

from ._stores import store_at


async def _write(url: str, job_id: str, writer: str, count: int) -> None:
    store = store_at(url)
    await store.open()
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with gate:
            await store.append_event(job_id, "test.write", f"{writer}/{i}",
                                     {"writer": writer, "i": i}, terminal=False)

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await store.close()


if __name__ == "__main__":
    url, job_id, writer, count = sys.argv[1:5]
    asyncio.run(_write(url, job_id, writer, int(count)))
