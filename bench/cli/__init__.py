"""The `sslbench` command: its parser and one handler per command (`main`)."""
