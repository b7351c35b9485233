"""Pure decisions: what this node announces, what it installs, and why.

Nothing in this package imports kubernetes, exabgp or pyroute2 (a unit test greps for it).
"""
