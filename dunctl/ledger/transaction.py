"""The ledger's write transactions (`Ledger.transaction`, `Ledger.light_transaction`) as a context manager class:
a @contextmanager generator cost 1.5-2 us more per transaction than the class, and a demo runs about ten thousand
of them (most writing a row or two)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dunctl.ledger import Ledger


class Transaction:
    """One write transaction, started IMMEDIATE (a concurrent writer waits at BEGIN for busy_timeout instead of
    failing halfway); inside another, a savepoint of it. `light`: see Ledger.light_transaction."""

    __slots__ = ("ledger", "light", "savepoint")

    def __init__(self, ledger: Ledger, light: bool = False):
        self.ledger, self.light, self.savepoint = ledger, light, None

    def __enter__(self) -> None:
        ledger = self.ledger
        conn = ledger.conn
        if self.light:
            if ledger._light and ledger.durable and not ledger._relaxed and not conn.in_transaction:
                conn.execute("PRAGMA synchronous = NORMAL")   # until the next ordinary transaction
                ledger._relaxed = True
        else:
            if ledger._relaxed and not conn.in_transaction:
                conn.execute("PRAGMA synchronous = FULL")
                ledger._relaxed = False
            ledger._sent.clear()
        if conn.in_transaction:
            name = f"sp{id(conn)}_{ledger._depth}"
            ledger._depth += 1
            conn.execute(f"SAVEPOINT {name}")
            self.savepoint = name
        else:
            conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, error, trace) -> bool:
        ledger, name = self.ledger, self.savepoint
        conn = ledger.conn
        if name is not None:
            ledger._depth -= 1
            if kind is not None:
                ledger._states = None          # what it wrote is undone: read the state again
                # SQLite may have rolled the whole transaction back itself (a full disk does): then there is no
                # savepoint left to go back to, and the error to report is the one that did it
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                return False
            conn.execute(f"RELEASE {name}")
            return False
        if kind is not None:
            ledger._states = None
            conn.rollback()
            return False
        conn.commit()
        return False
