"""Shared analysis computed once per file and queried by rules (design §3)."""
