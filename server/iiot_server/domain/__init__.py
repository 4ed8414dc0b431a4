"""The platform's rules, pure: no I/O, no clock reads, no framework imports.

Imported by the HTTP layer, the broker layer and the simulator alike, so simulation
and platform cannot disagree.
"""
