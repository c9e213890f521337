"""The audit witness: an anchor for the audit chain that the controller's own OS user cannot rewrite.

``teleops audit witness`` runs as a user of its own and appends every chain head the controller sends it to a
log only that user can write (``server.py``); ``teleops audit verify`` reads the log back over the same socket
and holds the chain against it (``protocol.py``). See docs/adr/0004-audit-witness.md.
"""
