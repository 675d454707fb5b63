"""The bundled recipes (TOML files), installed as package data."""
