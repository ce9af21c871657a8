"""A real Kubernetes control plane for tests: kine, kube-apiserver, kube-controller-manager, node agent."""
