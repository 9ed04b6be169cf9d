"""devkit: what we develop, test and demonstrate with; nothing in the product imports it.

- Test doubles reached over real HTTP: a LINSTOR controller emulator (``linstor_emulator``) and a
  Kubernetes API stand-in (``kube_standin``), both checked by clients written by others
  (python-linstor, the official kubernetes client), so they prove the wire format, not only our
  reading of it; Kubernetes object builders (``kube_objects``) and a ``FakeClock``.
- ``make demo``: the whole-system story (``story``), the extender on a static cluster
  (``extender_demo``, ``demo_cluster``) and the ``demo`` subcommand that runs them (``cli``).

It is installed in the development environment (``pip install -e .``) but not copied into the
container image (Dockerfile, .dockerignore), so the image has no doubles and no ``demo``.
"""
