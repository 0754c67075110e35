"""How Kimmie hears about things, whatever carries it: the "notify_admin" job (jobs.py), the errors a
channel raises when her chat cannot be reached (errors.py), the words and read models her cards and
e-mails share (facts.py, views.py), and the logging notifier for a process without Telegram.

The Telegram notifier lives in bot/notifier.py and the e-mail fallback in channels/email/admin_mail.py;
both implement or feed these, and core imports neither.
"""
