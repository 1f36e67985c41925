"""Runtime checks, run by `torch_audit.audit()` and `torch-audit run`. One check per module;
import torch lazily (inside methods) so that listing the catalogue stays torch-free."""
