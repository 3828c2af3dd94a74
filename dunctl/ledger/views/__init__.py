"""Read models: the SQL behind the commands that only read the ledger (status, report, notices, experiments,
the backtest's history). Writes live in the stores (`ledger.sync`, `ledger.cases`, `ledger.notices`)."""
