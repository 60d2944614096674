"""sslbench engine: data, config, training loop, run store, runner and CLI."""
