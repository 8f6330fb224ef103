"""Test helpers shared by several test modules (real processes, never mocks)."""
