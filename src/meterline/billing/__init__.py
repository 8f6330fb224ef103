"""Billing: the shell that applies pricing and makes, explains, proves and audits invoices."""
