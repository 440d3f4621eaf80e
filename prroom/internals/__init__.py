"""Every reach into a library's internals, fenced in one place."""
