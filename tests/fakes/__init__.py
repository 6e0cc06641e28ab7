"""Fakes the tests run as processes: `tests.fakes.fake_model`, a deterministic stand-in for
an OpenAI-compatible server that says nothing about quality (see its docstring)."""
