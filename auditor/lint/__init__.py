"""The static engine. Nothing under this package may import torch."""
