{{- define "olivekube.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "olivekube.labels" -}}
app.kubernetes.io/name: olivekube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "olivekube.selector" -}}
app.kubernetes.io/name: olivekube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "olivekube.runnerNamespaces" -}}
{{- if .Values.runner.namespaces -}}
{{- toJson .Values.runner.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* What the operator reads and patches in each namespace it watches: workflows and their status, the
Jobs and pods it follows, events. */}}
{{- define "olivekube.operatorReadRules" -}}
- apiGroups: [olivekube.io]
  resources: [optimizationworkflows]
  verbs: [get, list, watch]
- apiGroups: [olivekube.io]
  resources: [optimizationworkflows/status]
  verbs: [get, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, list]
{{- if gt (int .Values.operator.replicaCount) 1 }}
- apiGroups: [kopf.dev]
  resources: [{{ if .Values.watchNamespaces }}kopfpeerings{{ else }}clusterkopfpeerings{{ end }}]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}

{{/* What the operator creates, only in namespaces where workflows run (a watched one, or in
cluster-wide mode one of runner.namespaces): Jobs, and each workflow's runner identity. */}}
{{- define "olivekube.operatorWriteRules" -}}
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, delete]  # delete: a suspended pass running on Azure ML stops at once
# A search's trials: each a workflow of its own, the search's spec with one point filled in; deleted
# (only those the search owns) when the search ends early (goals met, time or failure budget spent).
- apiGroups: [olivekube.io]
  resources: [optimizationworkflows]
  verbs: [create, delete]
# Each workflow's runner identity: a ServiceAccount and a Role that reaches only that workflow.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create]
# The headless Service of a training pass on several pods (their rendezvous), owned by the workflow.
- apiGroups: [""]
  resources: [services]
  verbs: [create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create]
# A workflow's Kueue LocalQueue (spec.kubernetes.queueName), read before its Job is made: a queue
# that does not exist would hold the Job suspended for ever.
- apiGroups: [kueue.x-k8s.io]
  resources: [localqueues]
  verbs: [get]
{{- if .Values.runner.networkPolicy.enabled }}
# The NetworkPolicy of that rendezvous: its Job's pods admit each other (and nothing else).
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create]
{{- end }}
{{- end -}}

{{/* Namespaces no release may open to workflows: the cluster's own. */}}
{{- define "olivekube.checkNamespaces" -}}
{{- range concat (.Values.watchNamespaces | default list) (.Values.runner.namespaces | default list) }}
{{- if has . (list "kube-system" "kube-public" "kube-node-lease") }}
{{- fail (printf "%s is the cluster's own namespace: olivekube never runs workflows there" .) }}
{{- end }}
{{- end }}
{{- end -}}
