"""Test servers that attack the backend, each run as its own process by
`tests._launch.start_test_server`."""
