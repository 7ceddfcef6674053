"""Install Talos over SSH on hosts that cannot PXE-boot (``cloudctl install-ssh``).

``disk`` (pure) decides whether the target disk may be written from what the host reports;
``image`` reads the cached factory ``metal`` image (size and SHA-256 of the raw content, chunks
decompressed while streaming); ``remote`` builds the shell commands run on the host and parses
their answers (pure); ``session`` is the paramiko edge (host keys, commands, streaming);
``install`` does one node, ``run`` several at once.
"""

KNOWN_HOSTS = "known_hosts"
"""SSH host keys of the ``ssh:`` nodes, in the cluster directory (install-ssh, Ansible hooks)."""
