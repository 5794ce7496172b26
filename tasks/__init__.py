"""The work each pipeline step does (Ray-parallel where it scales); flows call these."""
