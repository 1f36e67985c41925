"""The torch-audit rule catalogue: one rule per module (see docs/writing-rules.md)."""
