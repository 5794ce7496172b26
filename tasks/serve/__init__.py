"""Serving: a checkpoint answers spoken conversations over WebSockets, many at once."""
