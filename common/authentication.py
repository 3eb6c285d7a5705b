"""Token authentication under both schemes clients use: `Authorization:
Token <key>` (DRF's) and `Authorization: Bearer <key>` (what most HTTP
clients and API gateways send). Both take the same tokens."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "The same token as `Authorization: Token <key>`."}
