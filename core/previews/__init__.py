"""Looking Glass previews: the customer's own dog photo, edited by FAL into a grooming style
(service.py), with the styles from catalog.toml (styles.py), photo checks (images.py), the FAL
adapter (fal.py, the only module importing fal_client) and its webhook signature (webhook.py)."""
