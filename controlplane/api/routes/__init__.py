"""Thin route modules: parse → service → response."""
