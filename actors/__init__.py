"""Thin Thespian shells around the pure core: shards, payment desk, head-end gateways."""
