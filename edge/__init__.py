"""edge-gemma: run Google's Gemma 4 edge models (E2B, E4B) well on small hardware."""

__version__ = "0.1.0"
