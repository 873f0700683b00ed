"""The device contract (placeholder until the contract lands)."""
