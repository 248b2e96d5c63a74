"""The host as the kernel shows it: sysfs, PCI devices, the device catalog, platform facts, CC backends."""
