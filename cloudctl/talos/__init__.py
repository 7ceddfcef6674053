"""Talos API: minimal protos (``proto/``), a grpclib client (``client``), install-disk
resolution (``disks``) and rack operations (``ops``).

Entry points::

    client.TalosClient(Endpoint, Credentials | None)   # None: maintenance (insecure) mode
    client.Credentials.from_talosconfig(text)
    ops.discover / ops.preflight / ops.apply_all / ops.bootstrap_once / ops.kubeconfig
    ops.versions / ops.reboot_node / ops.upgrade_node / ops.upgrade_all
"""
