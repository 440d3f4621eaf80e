"""The product's logic: no Flask, no Socket.IO imports."""
