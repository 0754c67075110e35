"""A small asyncio TCP proxy that can cut the line: put it between the service and PostgreSQL, then
`cut()` drops every open connection (each side sees a reset, as when a database fails over or a
network link goes down) and refuses new ones until `restore()`.

    proxy = TcpProxy("127.0.0.1", 5432)
    port = await proxy.start()        # the service connects to 127.0.0.1:<port>
    await proxy.cut_for(4.0)          # 4 s without a database
"""

from __future__ import annotations

import asyncio
import contextlib

CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.is_cut = False
        self.connections = 0  # accepted and forwarded, in all
        self.refused = 0  # turned away while cut
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def cut(self) -> None:
        self.is_cut = True
        self._drop_all()

    def restore(self) -> None:
        self.is_cut = False

    async def cut_for(self, seconds: float) -> None:
        self.cut()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.restore()

    def _drop_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()  # a reset, not a polite FIN: what a failed link looks like
        self._open.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self.refused += 1
            client_writer.transport.abort()
            return
        try:
            async with asyncio.timeout(5):
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except (OSError, TimeoutError):
            client_writer.transport.abort()
            return
        if self.is_cut:  # cut while connecting
            up_writer.transport.abort()
            client_writer.transport.abort()
            return
        self.connections += 1
        self._open.update((client_writer, up_writer))
        pipes = (
            asyncio.create_task(self._pipe(client_reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, client_writer)),
        )
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)
        for writer in (client_writer, up_writer):
            self._open.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        # One side closed: close the other, so neither end waits on a half-open line.
        writer.transport.abort()
