"""Labels, annotations, environment variables and versions that several layers agree on."""

from __future__ import annotations

# Part of every cache and chain key: raise it whenever a pass can produce other output from the same
# inputs, so that no cached artifact of the old behaviour is reused (0.1.1: CPU LoRA dropout masks,
# EOS tokens kept in the labels when a tokenizer pads with EOS; 0.1.2: the CPU LoRA forward folds its
# scales into B and draws its masks in another order; 0.1.3: CPU LoRA masks seeded from torch's
# generator, the LoRA Linear one autograd node; 0.1.4: ModelBuilder keeps the LoRA MatMuls of an
# adapter built into the graph in float).
RUNNER_VERSION = "0.1.4"

# Labels on the Jobs (and tags on the Azure ML jobs) of a pass attempt.
LABEL_WORKFLOW = "olivekube.io/workflow"
LABEL_PASS = "olivekube.io/pass"
LABEL_KEY = "olivekube.io/key"
LABEL_ATTEMPT = "olivekube.io/attempt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "olivekube"}
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"

DEFAULT_RUNNER_IMAGE = "olivekube/runner:0.1.0"
DEFAULT_SERVICE_ACCOUNT = "olivekube-runner"

# Environment of a pass's pod or Azure ML job.
ATTEMPT_ENV = "OLIVEKUBE_ATTEMPT"
NPROC_PER_NODE_ENV = "OLIVEKUBE_NPROC_PER_NODE"
NUM_NODES_ENV = "OLIVEKUBE_NUM_NODES"
MASTER_ADDR_ENV = "OLIVEKUBE_MASTER_ADDR"
"""A training pass's topology, set by the operator on its pods; the pod's node rank is the Indexed
Job's JOB_COMPLETION_INDEX."""
WORKFLOW_ENV = "OLIVEKUBE_WORKFLOW"
PVC_MOUNTS_ENV = "OLIVEKUBE_PVC_MOUNTS"

# Paths inside a pod.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TERMINATION_LOG = "/dev/termination-log"
SCRATCH_DIR = "/tmp"  # the runner's writable space (an emptyDir) under a read-only root file system
SCRATCH_VOLUME = "olivekube-scratch"
RUNNER_UID = 65532  # the images' non-root user
