"""Helpers for conveyor's own tests and benchmarks: throwaway environments and keep-alive load.

They drive real engines the way a user's deploy does, but they are not part of the shipped
library (``src/conveyor``): nothing a user installs depends on them.
"""
