"""veneer: attack neural-network explanations to measure how far they can be trusted.

Layers (each imports only from those before it):
``data``/``models`` -> ``explain`` -> ``metrics`` -> ``attacks``/``manipulate``/``neurons`` -> ``report``/``cli``.
"""

__version__ = "0.1.0"
