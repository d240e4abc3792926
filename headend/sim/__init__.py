"""headend/sim."""
