"""The finance dashboard: server-rendered pages under ``/dashboard`` of the HTTP API.

Margins live and over time, customers and their status, invoices down to each event's
inclusion proof, the revenue waterfall, deferred revenue and trial balance, and control
firings with an unblock button. Jinja2 templates (autoescaped), one vendored stylesheet,
charts as inline SVG drawn on the server: no script, nothing fetched from elsewhere.
See docs/dashboard.md.
"""

from meterline.dashboard.routes import Dashboard, mount_dashboard

__all__ = ["Dashboard", "mount_dashboard"]
