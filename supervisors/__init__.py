"""Supervisor actors applying the pure OTP policy of domain.supervision."""
