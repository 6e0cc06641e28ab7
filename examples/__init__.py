"""The bundled examples. In a checkout they live in `examples/`; the installed distribution
ships them as the package `mipro.examples` (see `package-dir` in `pyproject.toml`), so
`mipro demo` finds them wherever it is installed."""
