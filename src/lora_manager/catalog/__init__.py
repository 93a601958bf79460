"""The adapter catalog: queries, rules and routes."""
