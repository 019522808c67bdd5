"""The gateway's routes, one module per area, included by ``main.create_app``."""
