"""The Platform API client (`PlatformClient`), its values (`models`) and errors (`errors`)."""

from amigofs.api.client import DEFAULT_BASE_URL, ClientConfig, PlatformClient, RetryPolicy
from amigofs.api.secret import ApiKey

__all__ = ["DEFAULT_BASE_URL", "ApiKey", "ClientConfig", "PlatformClient", "RetryPolicy"]
