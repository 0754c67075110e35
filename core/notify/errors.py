"""The errors an AdminNotifier raises when Kimmie cannot be reached on its channel: the "notify_admin"
job (core/notify/jobs.py) then hands the notification to the e-mail fallback instead of retrying.
"""

from __future__ import annotations

from core.jobs.queue import PermanentJobError


class AdminUnreachableError(PermanentJobError):
    """Kimmie's Telegram chat cannot be reached (bot blocked, chat not found, token refused, no chat
    configured): retrying Telegram cannot help, another channel can. The message is ours (Telegram's
    description at most), never a token."""


class NoAdminChatError(AdminUnreachableError):
    """No admin chat is configured: retrying cannot help."""
