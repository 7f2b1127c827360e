"""Contract (``protocol``) and registry (``registry``) for infrastructure providers."""
