"""The HTTP service: the only part of flowtracker that touches Starlette."""

from flowtracker.web.app import app_from_environment, create_app

__all__ = ["app_from_environment", "create_app"]
