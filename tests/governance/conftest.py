"""The deployment fixtures (an app with an admin, model versions) serve governance tests too."""

from tests.deployments.conftest import plane

__all__ = ["plane"]
