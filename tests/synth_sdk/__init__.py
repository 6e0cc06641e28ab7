"""Drives synth-ai's real job client against the gateway (run in its own venv)."""
