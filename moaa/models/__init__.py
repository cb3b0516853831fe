"""The model seam and what wraps it.

The async chat client (the only code that talks HTTP to models), limits, the request cache, call
accounting, a run's clients, the in-process transformers backend and the student loader.
"""
