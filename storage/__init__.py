"""Durable state behind one interface: journal, snapshots, ledger, outbox, dead letters, audit."""
