"""Ephemeral network-boot service: DHCP (full | proxy), TFTP (iPXE binaries), HTTP (iPXE script,
kernel, initramfs). ``service.BootService`` runs them until every inventory node has fetched its
initramfs, or a timeout names the nodes that never showed up."""
