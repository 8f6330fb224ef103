"""The Python SDK: a client that batches usage events to a meterline server."""

from meterline.sdk.client import Client, DeliveryReport, QueueFull

__all__ = ["Client", "DeliveryReport", "QueueFull"]
