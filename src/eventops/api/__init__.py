"""The control plane's REST API: tokens with roles, audited mutations, OpenAPI.

`create_api(settings)` builds the FastAPI app; `eventops api serve` runs it with uvicorn.
"""

from eventops.api.app import create_api
from eventops.api.tokens import Principal, create_token, list_tokens, revoke, verify

__all__ = ["Principal", "create_api", "create_token", "list_tokens", "revoke", "verify"]
