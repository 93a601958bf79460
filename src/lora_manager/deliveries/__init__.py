"""Prompts and deliveries: compose prompts from active adapters (jobs and back ends follow)."""
