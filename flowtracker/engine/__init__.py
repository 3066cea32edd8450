"""The domain, pure: callbacks as values, parsing, timestamps, the lifecycles and the fold.

Nothing here does I/O or imports another part of flowtracker (tests/test_layering.py).
"""
