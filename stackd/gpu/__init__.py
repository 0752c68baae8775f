"""GPU leases for on-demand models (``leases``). See ``design.md``."""
