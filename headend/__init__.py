"""Head-end systems: adapters that speak to them and a simulator of a meter fleet."""
