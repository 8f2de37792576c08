"""Names of user-created objects (projects, models, datasets, deployments, aliases).

Lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit: safe in URLs,
file names, Kubernetes object names and shell arguments, and free of template syntax.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=1, max_length=63)]
