"""Who may call each route, in one table.

Services enforce these (through `permissions.authorize` and the principal dependency); the
table is what they must add up to, and tests/governance/test_permission_table.py calls every
route as every role and checks the answers match it. A new route without a row here fails
that test, so nobody adds an endpoint without deciding who may call it.

Rules:
  public                 anyone (liveness, readiness)
  credential_exchange    anyone; how a credential is obtained (rate limited)
  authenticated          any signed-in user; results are filtered to what they may see
  admin                  global admins only
  owner_or_admin         a project owner (for their projects) or an admin
  key_owner              the user who created the API key, or an admin
  api_key                an API key with the predict scope for that deployment (data plane)
  serving_token          the deployment's own model servers
  scrape                 an admin or the metrics scrape token
  <Action>               a project role that holds this action (see permissions.ROLE_ACTIONS)
"""

from __future__ import annotations

from konan.governance.permissions import Action

Rule = str | Action

ROUTE_RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "scrape",
    ("GET", "/openapi.json"): "authenticated",
    ("GET", "/docs"): "authenticated",
    # auth
    ("POST", "/api/v1/auth/login"): "credential_exchange",
    ("POST", "/api/v1/auth/refresh"): "credential_exchange",
    ("POST", "/api/v1/auth/logout"): "authenticated",
    ("GET", "/api/v1/auth/me"): "authenticated",
    # projects, users, keys, approvals, audit
    ("POST", "/api/v1/projects"): "admin",
    ("GET", "/api/v1/projects"): "authenticated",
    ("PUT", "/api/v1/projects/{project}/members"): Action.manage_members,
    ("POST", "/api/v1/users"): "admin",
    ("POST", "/api/v1/api-keys"): Action.deploy,
    ("GET", "/api/v1/api-keys"): "authenticated",
    ("DELETE", "/api/v1/api-keys/{key_id}"): "key_owner",
    ("GET", "/api/v1/approvals"): "authenticated",
    ("POST", "/api/v1/approvals/{approval_id}/approve"): Action.approve,
    ("POST", "/api/v1/approvals/{approval_id}/reject"): Action.approve,
    ("GET", "/api/v1/audit"): "owner_or_admin",
    # registry
    ("POST", "/api/v1/models"): Action.register,
    ("GET", "/api/v1/models"): "authenticated",
    ("GET", "/api/v1/models/{name}"): Action.read,
    ("POST", "/api/v1/models/{name}/versions"): Action.register,
    ("GET", "/api/v1/models/{name}/versions"): Action.read,
    ("GET", "/api/v1/models/{name}/versions/{version}"): Action.read,
    ("PATCH", "/api/v1/models/{name}/versions/{version}"): Action.register,
    ("GET", "/api/v1/models/{name}/versions/{version}/artifact"): Action.read,
    ("PUT", "/api/v1/models/{name}/aliases/{alias}"): Action.register,
    ("GET", "/api/v1/models/{name}/aliases"): Action.read,
    ("GET", "/api/v1/models/{name}/aliases/history"): Action.read,
    ("POST", "/api/v1/datasets"): Action.register,
    ("GET", "/api/v1/datasets"): "authenticated",
    ("GET", "/api/v1/datasets/{name}/versions"): Action.read,
    ("GET", "/api/v1/datasets/{name}/versions/{version}"): Action.read,
    # deployments
    ("POST", "/api/v1/deployments"): Action.deploy,
    ("GET", "/api/v1/deployments"): "authenticated",
    ("GET", "/api/v1/deployments/{name}"): Action.read,
    ("GET", "/api/v1/deployments/{name}/revisions"): Action.read,
    ("PUT", "/api/v1/deployments/{name}/traffic"): Action.deploy,
    ("POST", "/api/v1/deployments/{name}/promote"): Action.request_promotion,
    ("POST", "/api/v1/deployments/{name}/rollback"): Action.deploy,
    ("POST", "/api/v1/deployments/{name}/scale"): Action.deploy,
    ("DELETE", "/api/v1/deployments/{name}"): Action.deploy,
    ("GET", "/api/v1/deployments/{name}/logs"): Action.read,
    ("POST", "/api/v1/deployments/{name}/predict"): "api_key",
    # a feedback-scoped API key may also send ground truth (checked in monitoring/feedback.py)
    ("POST", "/api/v1/deployments/{name}/feedback"): Action.deploy,
    ("GET", "/api/v1/deployments/{name}/monitoring/health"): Action.read,
    ("GET", "/api/v1/deployments/{name}/monitoring/drift"): Action.read,
    ("GET", "/api/v1/deployments/{name}/monitoring/performance"): Action.read,
    ("GET", "/api/v1/deployments/{name}/monitoring/export"): Action.read,
    ("GET", "/api/v1/deployments/{name}/monitoring/settings"): Action.read,
    # drift thresholds decide alerts: a maintainer's change, audited
    ("PUT", "/api/v1/deployments/{name}/monitoring/settings"): Action.deploy,
    ("POST", "/api/v1/deployments/{name}/alert-rules"): Action.deploy,
    ("GET", "/api/v1/deployments/{name}/alert-rules"): Action.read,
    ("DELETE", "/api/v1/deployments/{name}/alert-rules/{rule_id}"): Action.deploy,
    ("GET", "/api/v1/deployments/{name}/alerts"): Action.read,
    ("POST", "/api/v1/internal/deployments/{name}/keys"): "serving_token",
}
