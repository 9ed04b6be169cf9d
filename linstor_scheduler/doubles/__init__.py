"""Test doubles reached over real HTTP: a LINSTOR controller emulator and a Kubernetes API stand-in.

They ship with the package (not only under tests/) because ``make demo`` runs the whole system on
them with no cluster. Both are checked by clients written by others (python-linstor, the official
kubernetes client), so they prove the wire format, not only our reading of it.
"""
