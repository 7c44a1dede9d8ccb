"""The gateway: WebSocket fan-out with recovery, the REST API, auth and limits."""
