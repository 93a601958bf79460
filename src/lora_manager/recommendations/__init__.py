"""Recommendations: trigger text, embeddings and similar-adapter suggestions."""
