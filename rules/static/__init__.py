"""Static rules, run by `torch-audit lint`. One rule class per module; never import torch here."""
