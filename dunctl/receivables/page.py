"""The look of the receivables' HTML pages (the statement of account, the collections packet): read on a screen or
printed by the customer's accounts payable or whoever takes a case over. A readable column; messages wrapped as
sent, never cut off at the right edge; tables that scroll on a phone rather than squeeze a date onto two lines (and a statement drops its issue
dates there, so the amount stays in view)."""

STYLE = ("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>"
         "body{font:15px/1.5 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328;max-width:60rem;"
         "margin:0 auto;padding:16px}h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}"
         "h3{font-size:1rem;margin-bottom:.25rem}pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;"
         "padding:12px;border-radius:6px;font-size:13px}table{border-collapse:collapse;display:block;overflow-x:auto}"
         "td{padding:4px 8px;border-bottom:1px solid #d0d7de;vertical-align:top}td:first-child{white-space:nowrap}"
         "p{overflow-wrap:anywhere}th{text-align:left;padding:4px 8px;border-bottom:2px solid #d0d7de}"
         "td.amount,th.amount{text-align:right;white-space:nowrap}td.date{white-space:nowrap}tfoot th{border:0}"
         "@media (max-width:480px){.issued{display:none}body{padding:12px}table{font-size:13px}td,th{padding:4px}}</style>")
