"""The library version, written once: the package, its checkpoints and datasets, and pyproject.toml read it here."""

__version__ = "0.1.0"
