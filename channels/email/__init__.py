"""E-mail: an outbound-only channel (reminders and replies outside Meta's 24-hour window)."""
