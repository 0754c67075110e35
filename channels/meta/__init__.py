"""Messenger and Instagram: the webhook (views.py), the payload parser (parser.py), the Send API
adapter (sender.py). Wired by cheshire/wiring.py through `setup_routes` and `MetaSenders`."""
