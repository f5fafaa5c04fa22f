"""Real services for the test suite, started on free loopback ports in their own directories."""
