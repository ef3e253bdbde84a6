"""The pure core: no I/O. Keys, the CSV contract, the byte stream checks, and planning."""
