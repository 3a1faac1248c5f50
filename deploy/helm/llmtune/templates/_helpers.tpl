{{/* Names, labels and the pieces every component shares. */}}

{{- define "llmtune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmtune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>", e.g. {{ include "llmtune.component" (list . "router") }} */}}
{{- define "llmtune.component" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%s" (include "llmtune.fullname" $ctx) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmtune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmtune.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "llmtune.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "llmtune.labels" -}}
{{- $ctx := index . 0 -}}
helm.sh/chart: {{ include "llmtune.chart" $ctx }}
{{ include "llmtune.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: llmtune
{{- end }}

{{- define "llmtune.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "llmtune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmtune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llmtune.adminTokenSecret" -}}
{{- default (include "llmtune.component" (list . "admin-token")) .Values.adminToken.existingSecret }}
{{- end }}

{{- define "llmtune.adminTokenKey" -}}
{{- if .Values.adminToken.existingSecret }}{{ .Values.adminToken.key }}{{ else }}token{{ end }}
{{- end }}

{{- define "llmtune.apiKeysSecret" -}}
{{- default (include "llmtune.component" (list . "api-keys")) .Values.apiKeys.existingSecret }}
{{- end }}

{{- define "llmtune.apiKeysKey" -}}
{{- if .Values.apiKeys.existingSecret }}{{ .Values.apiKeys.key }}{{ else }}pepper{{ end }}
{{- end }}

{{/* The API keys' pepper as an env entry (control plane and router). */}}
{{- define "llmtune.pepperEnv" -}}
- name: LLMTUNE_KEYS__PEPPER
  valueFrom:
    secretKeyRef: {name: {{ include "llmtune.apiKeysSecret" . | quote }}, key: {{ include "llmtune.apiKeysKey" . | quote }}}
{{- end }}

{{/* Whether an optional monitoring.coreos.com resource renders: true, false, or auto (its API exists). */}}
{{- define "llmtune.wants" -}}
{{- $ctx := index . 0 }}{{- $setting := index . 1 }}{{- $api := index . 2 -}}
{{- if eq (toString $setting) "auto" }}
{{- if $ctx.Capabilities.APIVersions.Has $api }}true{{ end }}
{{- else if eq (toString $setting) "true" }}true{{ end }}
{{- end }}

{{/* The store settings every process reads, and its client certificate for etcd (component key). */}}
{{- define "llmtune.storeEnv" -}}
{{- $ctx := index . 0 -}}
- name: LLMTUNE_STORE__BACKEND
  value: etcd
- name: LLMTUNE_STORE__NAMESPACE
  value: {{ $ctx.Values.store.namespace | quote }}
- name: LLMTUNE_STORE__ENDPOINTS
{{- if $ctx.Values.bundledEtcd.enabled }}
  value: {{ printf "http://%s:2379" (include "llmtune.component" (list $ctx "etcd")) | quote }}
{{- else }}
  value: {{ join "," $ctx.Values.store.endpoints | quote }}
{{- if $ctx.Values.store.tls.enabled }}
- name: LLMTUNE_STORE__CA_FILE
  value: /etc/llmtune/etcd/ca.crt
- name: LLMTUNE_STORE__CERT_FILE
  value: /etc/llmtune/etcd/tls.crt
- name: LLMTUNE_STORE__KEY_FILE
  value: /etc/llmtune/etcd/tls.key
{{- end }}
{{- if $ctx.Values.store.authSecret }}
- name: LLMTUNE_STORE__USERNAME
  valueFrom:
    secretKeyRef: {name: {{ $ctx.Values.store.authSecret | quote }}, key: username}
- name: LLMTUNE_STORE__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $ctx.Values.store.authSecret | quote }}, key: password}
{{- end }}
{{- end }}
{{- end }}

{{- define "llmtune.storeTls" -}}
{{- $ctx := index . 0 -}}
{{- and (not $ctx.Values.bundledEtcd.enabled) $ctx.Values.store.tls.enabled }}
{{- end }}

{{- define "llmtune.storeVolumeMount" -}}
{{- if eq (include "llmtune.storeTls" .) "true" -}}
- name: etcd-tls
  mountPath: /etc/llmtune/etcd
  readOnly: true
{{- end }}
{{- end }}

{{- define "llmtune.storeVolume" -}}
{{- $ctx := index . 0 }}{{- $component := index . 1 }}
{{- if eq (include "llmtune.storeTls" .) "true" -}}
- name: etcd-tls
  secret:
    secretName: {{ index $ctx.Values.store.tls.secrets $component | quote }}
    defaultMode: 0440  # the group is the pod's fsGroup: the process reads it, others do not
{{- end }}
{{- end }}

{{/* A Redis URL from its Secret, as the variable `name`. */}}
{{- define "llmtune.redisEnv" -}}
{{- $ctx := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef: {name: {{ $ctx.Values.redis.existingSecret | quote }}, key: {{ $ctx.Values.redis.key | quote }}}
{{- end }}

{{/* Extra LLMTUNE_* settings of a component. */}}
{{- define "llmtune.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "llmtune.scrapeAnnotations" -}}
{{- $ctx := index . 0 -}}
{{- if $ctx.Values.metrics.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* A map as the agent reads one from its environment, "k=v,k=v" (node labels, OLLAMA_* settings). */}}
{{- define "llmtune.pairs" -}}
{{- $pairs := list -}}
{{- range $name, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $name (include "llmtune.ollamaValue" $value)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* An OLLAMA_* value as the agent writes it (NodePool ServerSettings.environment): booleans are 1/0. */}}
{{- define "llmtune.ollamaValue" -}}
{{- if kindIs "bool" . }}{{ ternary "1" "0" . }}{{ else if kindIs "float64" . }}{{ int64 . }}{{ else }}{{ toString . }}{{ end }}
{{- end }}
