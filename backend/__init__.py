"""Pollution hotline: the domain and the web service."""
