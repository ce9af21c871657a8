"""Print pyproject.toml's pinned requirements (the core ones and those of the extras named as arguments),
one per line: the Dockerfile installs them in a layer of their own, so a change to olivekube's sources
rebuilds only the small layer that installs the package itself."""

import sys
import tomllib

with open("pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]
requirements = list(project["dependencies"])
for extra in sys.argv[1:]:
    requirements += project["optional-dependencies"][extra]
print("\n".join(requirements))
