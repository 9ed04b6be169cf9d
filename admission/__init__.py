"""The scheduler-name admission webhook: pods with LINSTOR volumes get ``schedulerName: linstor``.

Without it, every workload that uses LINSTOR storage has to name the ``linstor`` scheduler itself;
with it, a pod that kept the default scheduler and mounts a LINSTOR-backed claim is handed to the
``linstor`` profile (kube-scheduler + our extender) at creation. Everything else passes untouched.
"""

OPT_OUT_LABEL = "linstor.csi.linbit.com/scheduler"
OPT_OUT_VALUE = "disabled"
