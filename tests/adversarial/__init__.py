"""Adversarial tests: hostile clients, bad input and store faults against real servers."""
