"""A real SMTP server in-process (aiosmtpd, on a free local port) that records what it accepted.

Refusals are scripted per recipient with the reply line the server sends at RCPT time, and the login
it accepts is fixed, so tests see exactly what a mail server would answer:

    smtp = FakeSMTPServer(login=("cheshire@salon.test", "s3cret-pass"))
    smtp.start()                                  # smtp.port
    smtp.refuse["full@example.org"] = "452 4.2.2 Mailbox full"
    smtp.refuse_senders["x@salon.test"] = "553 5.7.1 Sender address rejected"
    ...
    smtp.received   # [Received(mail_from, rcpt_tos, message), ...]
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class FakeSMTPServer:
    login: tuple[str, str] | None = None
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> reply at RCPT
    refuse_senders: dict[str, str] = field(default_factory=dict)  # sender -> reply at MAIL FROM
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _controller: Controller | None = None

    def start(self) -> None:
        self.port = free_port()
        options: dict[str, Any] = {}
        if self.login is not None:
            # Plain connection in tests (no certificate): allow AUTH without TLS, and require it.
            options = {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def url(self, *, user: str | None = None, password: str | None = None) -> str:
        user, password = (user, password) if user else (self.login or (None, None))
        credentials = f"{user}:{password}@" if user else ""
        return f"smtp://{credentials}127.0.0.1:{self.port}"

    # --- aiosmtpd hooks -----------------------------------------------------------------------
    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.login is not None
        if ok:
            ok = (data.login.decode(), data.password.decode()) == self.login
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if address in self.refuse_senders:
            return self.refuse_senders[address]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"
