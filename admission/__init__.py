"""The scheduler-name admission webhook: pods with LINSTOR volumes get ``schedulerName: linstor``.

Without it, every workload that uses LINSTOR storage has to name the ``linstor`` scheduler itself;
with it, a pod that kept the default scheduler and mounts a LINSTOR-backed claim is handed to the
``linstor`` profile (kube-scheduler + our extender) at creation. Everything else passes untouched.

Its public face is the opt-out label (nothing above the components uses more of it); the layers above
would import it from the package itself, never from its modules (tests/test_structure.py).
"""

__all__ = ["OPT_OUT_LABEL", "OPT_OUT_VALUE"]

OPT_OUT_LABEL = "linstor.csi.linbit.com/scheduler"
OPT_OUT_VALUE = "disabled"
