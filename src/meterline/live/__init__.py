"""The live path: in-memory projections updated per appended batch, the controls that
act on them, access decisions pushed to products, and outgoing webhooks."""
