"""Test support: real components started for tests (Prometheus, kopf against kmock)."""
