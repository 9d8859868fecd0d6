"""The socket API contract."""
