"""
The ``xe`` command line: the server's /cli handler speaking XAPI's thin
CLI protocol (connection, table, generic and explicit commands) and the
``xe`` client (client).
"""
