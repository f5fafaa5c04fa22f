"""A loopback TCP proxy in front of a real broker that cuts connections at chosen packets.

It reads the client id from each CONNECT and the type of each packet the broker sends back, so
a test can say "drop the consumer's connection instead of passing on its first SUBACK": the
client is then waiting at exactly that point when its connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

CONNECT = 1


@dataclass
class Cut:
    """Cut the connection of a client whose id ends with ``client_suffix`` (and not with
    ``unless_suffix``) instead of forwarding the broker's next packet of ``kind``, ``times``
    times."""

    client_suffix: str
    kind: int
    times: int = 1
    unless_suffix: str | None = None
    then_refuse: bool = False  # and refuse new connections until the test allows them again

    def applies(self, client_id: str, kind: int) -> bool:
        if self.times <= 0 or kind != self.kind or not client_id.endswith(self.client_suffix):
            return False
        return self.unless_suffix is None or not client_id.endswith(self.unless_suffix)


async def _packet(reader: asyncio.StreamReader) -> bytes:
    """One whole MQTT packet (fixed header included)."""
    header = await reader.readexactly(1)
    length, shift = 0, 0
    while True:
        byte = await reader.readexactly(1)
        header += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return header + await reader.readexactly(length)


def _client_id(connect: bytes) -> str:
    """The client id of a CONNECT packet (MQTT 5 or 3.1.1)."""
    offset = 1
    while connect[offset] & 0x80:
        offset += 1
    offset += 1  # past the remaining length
    offset += 2 + 4  # protocol name "MQTT"
    level = connect[offset]
    offset += 1 + 1 + 2  # level, flags, keepalive
    if level == 5:
        length, shift = 0, 0
        while True:
            byte = connect[offset]
            offset += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        offset += length
    size = connect[offset] << 8 | connect[offset + 1]
    return connect[offset + 2 : offset + 2 + size].decode()


class CuttingProxy:
    """Listens on a free loopback port and forwards to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.cuts: list[Cut] = []
        self.done: list[tuple[str, int]] = []  # (client id, packet type) of each cut made
        self.refusing = False  # close every new connection at once (a broker that is away)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        client = {"id": ""}
        ends = [writer, up_writer]

        async def upstream() -> None:
            while True:
                data = await _packet(reader)
                if data[0] >> 4 == CONNECT:
                    client["id"] = _client_id(data)
                up_writer.write(data)

        async def downstream() -> None:
            while True:
                data = await _packet(up_reader)
                kind = data[0] >> 4
                for cut in self.cuts:
                    if cut.applies(client["id"], kind):
                        cut.times -= 1
                        self.refusing = self.refusing or cut.then_refuse
                        self.done.append((client["id"], kind))
                        return  # the packet is not forwarded: the connection ends here
                writer.write(data)

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        with contextlib.suppress(Exception):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for end in ends:
            with contextlib.suppress(Exception):
                end.transport.abort()
