"""Deposits and card holds with Stripe (issue 12): policy, the use cases, webhook processing and
reconciliation. The stripe SDK is imported only by `stripe_adapter.py`, and only when configured."""
