"""A TCP relay on `db`'s second address that delays every byte it forwards,
each way, by the number of milliseconds written in a control file.

This kernel has no `netem` queueing discipline (`tc qdisc add ... netem`
answers "Specified qdisc kind is unknown"), so latency is added here, in
the only path between the embed hosts and `db`; packet loss is real, by
nftables in the embed hosts' namespaces. Bytes keep their order; a
connection closed on one side is closed on the other after the delay.

    python -m tests.multihost.relay LISTEN_ADDRESS TARGET_ADDRESS PORT[,PORT...] CONTROL_FILE
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path


class Delay:
    def __init__(self, control: Path) -> None:
        self.control = control
        self.seconds = 0.0

    async def follow(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                self.seconds = float(self.control.read_text().strip() or 0) / 1000
            await asyncio.sleep(0.2)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    async def deliver() -> None:
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay.seconds, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((loop.time() + delay.seconds, None))
    with contextlib.suppress(Exception):
        await delivering


async def _serve(listen: str, target: str, port: int, delay: Delay) -> asyncio.Server:
    async def handle(client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pump(client_reader, server_writer, delay), _pump(server_reader, client_writer, delay))

    return await asyncio.start_server(handle, listen, port)


async def main(listen: str, target: str, ports: list[int], control: Path) -> None:
    delay = Delay(control)
    servers = [await _serve(listen, target, port, delay) for port in ports]
    print(f"relay {listen} -> {target} ports {ports}, delay from {control}", flush=True)
    await asyncio.gather(delay.follow(), *(server.serve_forever() for server in servers))


if __name__ == "__main__":
    listen_address, target_address, port_list, control_file = sys.argv[1:5]
    asyncio.run(main(listen_address, target_address, [int(p) for p in port_list.split(",")], Path(control_file)))
