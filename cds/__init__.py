"""CDS Hooks clinical decision support service with data-driven rule packs."""

__version__ = "0.1.0"
