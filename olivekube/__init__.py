"""olivekube: Olive-style model optimization workflows on Kubernetes."""
