"""The `rest` adapter: the provider port spoken over HTTP to a service with the sandbox's REST contract."""
