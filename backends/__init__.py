"""I/O backends for SecureMCP (import name ``securemcp.backends``).

They run the sans-I/O core of :mod:`securemcp.protocol` on real sockets.
"""
