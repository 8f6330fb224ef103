"""Declarative pricing: YAML files -> configuration revisions, their diff and simulation."""
