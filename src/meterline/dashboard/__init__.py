"""The finance dashboard: server-rendered pages under ``/dashboard`` of the HTTP API.

Margins live and over time, customers and their status, invoices down to each event's
inclusion proof, the revenue waterfall, deferred revenue and trial balance, and control
firings with an unblock button. Jinja2 templates (autoescaped), one vendored stylesheet,
charts as inline SVG drawn on the server: no script, nothing fetched from elsewhere.
See docs/dashboard.md.

The rooms: ``site`` (the shell: sessions, templates, rendering, forms), ``derived`` (the
cached figures), ``reads`` and ``pages`` (what each page reads and shows), ``routes``
(the router and ``mount_dashboard``), ``views`` and ``charts`` (pure).
"""

from meterline.dashboard.routes import mount_dashboard
from meterline.dashboard.site import Dashboard

__all__ = ["Dashboard", "mount_dashboard"]
