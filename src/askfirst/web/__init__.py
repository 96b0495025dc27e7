"""The web adapter: member pages, the staff console and the /v1 HTTP API."""

from askfirst.config import WebSettings
from askfirst.web.app import create_app

__all__ = ["WebSettings", "create_app"]
