"""A small TCP proxy put between the service and PostgreSQL, so a test can break the link on cue.

    proxy = await TcpProxy("127.0.0.1", 5432).start()   # then connect to 127.0.0.1:proxy.port
    proxy.cut_on_next_write()  # the next bytes a client sends (a statement) are dropped, and its
                               # connection with them: "connection was closed in the middle of operation"
    proxy.cut_all()            # every open connection dies now
    await proxy.refuse()       # the port stops listening: connect() is refused (a failover)
    await proxy.resume()       # listening again on the same port
    proxy.reset_new = True     # accept, then reset at once (a server going down while it accepts)

No timers: each fault happens at a defined point of the conversation between client and server.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.reset_new = False
        self._cut_next = False
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0  # accepted so far (how many times the pool reconnected)

    @property
    def url_host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def refuse(self) -> None:
        """Stop listening and drop every link: new connections are refused, open ones are gone."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.cut_all()

    async def resume(self) -> None:
        if self._server is None:
            await self.start()

    def cut_on_next_write(self) -> None:
        self._cut_next = True

    def cut_all(self) -> None:
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        await self.refuse()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.reset_new:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, link, from_client=True)),
            asyncio.create_task(self._pump(up_reader, writer, link, from_client=False)),
        ]
        self._tasks.update(pumps)
        for pump in pumps:
            pump.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        *,
        from_client: bool,
    ) -> None:
        try:
            while data := await source.read(65536):
                if from_client and self._cut_next:
                    self._cut_next = False
                    self._drop(link)
                    return
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(link)

    def _drop(self, link: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        for writer in link:
            writer.transport.abort()
        self._links.discard(link)
