"""Prompt templates and the output constraints that go with them."""
