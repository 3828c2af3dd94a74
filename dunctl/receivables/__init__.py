"""Receivables: net-terms invoices (`collection_method: send_invoice`) collected through the same engine, ledger
and report as failed card payments. Nothing fails on such an invoice: its due date passes. Its case is timed from
that date, so a sequence's steps may come before it (`-7d`: a friendly reminder with the invoice and PDF links),
on it and after it.

A net-terms invoice goes only to segments whose rule names `collection_method` (the first of them it matches): a
config written for card dunning never starts writing to B2B customers it was not meant for, and a card segment
listed first (large amounts to a person) does not catch them.
"""
