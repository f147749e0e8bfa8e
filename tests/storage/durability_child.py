"""Child process for the durability tests: append messages one small batch at a time and print
each acked seq, flushed, until killed. Usage: python -m tests.storage.durability_child URL CONV"""

from __future__ import annotations

import sys

import trio

from storage import Message, backend_from_url


async def main(url: str, conv: str) -> None:
    backend = backend_from_url(url)
    await backend.open()
    print("open", flush=True)
    seq = 0
    while True:
        seqs = (seq + 1, seq + 2)
        batch = [
            Message(conv, s, f"{conv}-{s}", "writer", f"cm{s}", "text", "x" * 200, 1_700_000 + s)
            for s in seqs
        ]
        await backend.append_messages(batch)
        seq += 2
        print(*seqs, flush=True)  # both acked: durable from here on


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
