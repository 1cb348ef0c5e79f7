"""The image replay: the Dockerfile read as data (``dockerfile``), a bare Debian root made
with debootstrap (``rootfs``), and its stages replayed on a copy of it (``replay``)."""
