"""The website chat: `/api/chat` (views.py), the embeddable widget (static/), the page at `/`, and a
sender that marks replies sent (the browser polls for them)."""
