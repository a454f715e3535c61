"""The package version, in one place: setup.cfg reads it; `flexopt --version` and reports
print it."""

__version__ = "0.1.0"
