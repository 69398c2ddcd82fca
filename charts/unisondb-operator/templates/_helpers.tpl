{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "unisondb-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name. */}}
{{- define "unisondb-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "unisondb-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "unisondb-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "unisondb-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "unisondb-operator.labels" -}}
helm.sh/chart: {{ include "unisondb-operator.chart" . }}
{{ include "unisondb-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: unisondb
{{- end }}

{{- define "unisondb-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "unisondb-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "unisondb-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when the operator runs with leader election (auto: more than one replica). */}}
{{- define "unisondb-operator.leaderElection" -}}
{{- $m := .Values.leaderElection.mode | toString }}
{{- if eq $m "on" }}true
{{- else if eq $m "off" }}false
{{- else if gt (int .Values.replicas) 1 }}true
{{- else }}false
{{- end }}
{{- end }}

{{/*
Rules the reconcilers need, in the namespaces they watch. Every rule is one API call site in
operator/src (see the comment); e2e/tests/helm_chart.rs checks that each call is covered and that
nothing else (no Secrets, no Pods, no wildcards) is granted.
*/}}
{{- define "unisondb-operator.rules" -}}
# controller.rs: list/watch both kinds; reconcile/*.rs: get the upstream hub/relayer chain and
# mirrored hubs (strongly consistent GETs).
- apiGroups: ["unisondb.io"]
  resources: ["unisonhubs", "unisonrelayers"]
  verbs: ["get", "list", "watch"]
# status.rs: merge-patch .status (replicas, conditions, upstream, depth) via the status subresource.
- apiGroups: ["unisondb.io"]
  resources: ["unisonhubs/status", "unisonrelayers/status"]
  verbs: ["get", "patch"]
# build/mod.rs: owned objects carry ownerReferences with blockOwnerDeletion, which clusters with the
# OwnerReferencesPermissionEnforcement admission plugin allow only to who may update finalizers.
- apiGroups: ["unisondb.io"]
  resources: ["unisonhubs/finalizers", "unisonrelayers/finalizers"]
  verbs: ["update"]
# reconcile/mod.rs apply_all: server-side apply (PATCH, which creates when absent) of the
# StatefulSet; reconcile/*.rs GET it for the storage-immutability check; controller.rs watches owned ones.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# apply_all: server-side apply of the headless and client Services and the node ConfigMap;
# controller.rs watches the owned ones (label app.kubernetes.io/managed-by=unisondb-operator).
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# apply.rs: PodDisruptionBudget for relayers with replicas > 1, policy/v1 or (Kubernetes < 1.21)
# policy/v1beta1, whichever the server serves; deleted again when scaled down to 1 (GET first: only
# a PDB the node owns is deleted).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# build/serviceaccount.rs: each node's pods run under their own ServiceAccount (no token mounted);
# server-side apply, watched as owned.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["list", "watch", "create", "patch"]
# volumes.rs: a larger storage.size grows the node's PVCs in place (the StatefulSet's claim template
# is immutable): list them by label, merge-patch spec.resources.requests.storage.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "patch"]
# connectivity.rs: list a following node's pods to read each one's /metrics (pod IP, HTTP port)
# for the Connected condition; backup/mod.rs: list a backup Job's pods to read the termination
# message its container left (the node's answer). group/mod.rs (hub groups, replicas 3 or 5):
# controller.rs watches hub pods (a failover re-labels at once), merge-patches the
# unisondb.io/role label the client Service selects the leader by, and deletes outdated pods
# one at a time during a rolling update (the StatefulSet is OnDelete).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch", "delete"]
# backup/job.rs, backup/mod.rs: a hub with httpAuth or tls.http is backed up by a Job in its image
# (its pod reads the token and CA Secrets; the operator does not): created once per namespace
# (get first), watched as owned by the UnisonBackup, deleted when the backup passes its deadline.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# build/certificate.rs, apply.rs: spec.tls.certManager asks cert-manager for a Certificate
# (server-side apply); controller.rs watches owned ones when cert-manager is installed, and
# dereference.rs asks discovery whether certificates.cert-manager.io is served; reconcile deletes
# the one it made (if owned) when the spec switches back to secretName.
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# backup/mod.rs: the UnisonBackup controller watches backups and merge-patches their status;
# backup/schedule.rs applies the UnisonBackups a schedule creates (server-side apply), lists them
# by label and deletes Completed ones beyond successfulBackupsHistoryLimit.
- apiGroups: ["unisondb.io"]
  resources: ["unisonbackups"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# backup/schedule.rs: the UnisonScheduledBackup controller watches schedules.
- apiGroups: ["unisondb.io"]
  resources: ["unisonscheduledbackups"]
  verbs: ["get", "list", "watch"]
# backup/*.rs: phase, LSNs and sizes (backups), last/next schedule time (schedules).
- apiGroups: ["unisondb.io"]
  resources: ["unisonbackups/status", "unisonscheduledbackups/status"]
  verbs: ["get", "patch"]
# backup/schedule.rs: the UnisonBackups a schedule creates carry its controller ownerReference
# (blockOwnerDeletion; see the finalizers rule above).
- apiGroups: ["unisondb.io"]
  resources: ["unisonscheduledbackups/finalizers"]
  verbs: ["update"]
# reconcile/mod.rs Context::event: kube-runtime's Recorder publishes events.k8s.io/v1 Events
# (create, then patch to count repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Rules for leader election (leader.rs), in the operator's own namespace only. */}}
{{- define "unisondb-operator.leaseRules" -}}
# leader.rs Elector: GET the Lease, CREATE it when missing, UPDATE (replace) it to renew, take over
# or release leadership.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* Settings shared by the `helm test` containers: least privilege, small. */}}
{{- define "unisondb-operator.testContainer" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
resources:
  requests:
    cpu: 10m
    memory: 16Mi
  limits:
    memory: 64Mi
{{- end }}

{{/* Labels of the `helm test` pods: component `test`, so the operator's Service never selects them. */}}
{{- define "unisondb-operator.testLabels" -}}
helm.sh/chart: {{ include "unisondb-operator.chart" . }}
app.kubernetes.io/name: {{ include "unisondb-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: unisondb
{{- end }}
