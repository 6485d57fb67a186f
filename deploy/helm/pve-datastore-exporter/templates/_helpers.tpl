{{/* The names and labels every object shares, as the Prometheus community charts make them. */}}
{{- define "pvedx.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pvedx.fullname" -}}
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

{{- define "pvedx.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pvedx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pvedx.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pvedx.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "pvedx.name" . }}
{{- end }}

{{- define "pvedx.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pvedx.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the exporter's secrets: the user's, or the chart's. */}}
{{- define "pvedx.secretName" -}}
{{- default (include "pvedx.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "pvedx.webConfigSecretName" -}}
{{- default (printf "%s-web-config" (include "pvedx.fullname" .)) .Values.webConfig.existingSecret }}
{{- end }}

{{- define "pvedx.hasWebConfig" -}}
{{- if or .Values.webConfig.config .Values.webConfig.existingSecret }}true{{ end }}
{{- end }}

{{/* TLS and basic auth of the listener: said by the values, or read from the web config given here. */}}
{{- define "pvedx.tls" -}}
{{- if or .Values.webConfig.tls (hasKey .Values.webConfig.config "tls_server_config") }}true{{ end }}
{{- end }}

{{- define "pvedx.basicAuth" -}}
{{- if or .Values.webConfig.basicAuth (hasKey .Values.webConfig.config "basic_auth_users") }}true{{ end }}
{{- end }}

{{/* The keys of the secrets Secret the exporter reads, as `key: VARIABLE` lines. */}}
{{- define "pvedx.secretFiles" -}}
{{- if .Values.proxmox.tokenName }}
proxmox-token-value: PROXMOX_TOKEN_VALUE_FILE
{{- else }}
proxmox-password: PROXMOX_PASSWORD_FILE
{{- end }}
{{- if or .Values.secrets.apiToken (and .Values.secrets.existingSecret .Values.secrets.existingSecretHasApiToken) }}
api-token: EXPORTER_API_TOKEN_FILE
{{- end }}
{{- if eq .Values.database.type "postgresql" }}
database-url: DATABASE_URL_FILE
{{- end }}
{{- end }}

{{/* Refusals: settings that cannot work, said at render time with the reason. */}}
{{- define "pvedx.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (ne .Values.database.type "postgresql") }}
{{- fail "replicaCount > 1 needs database.type: postgresql. On SQLite each replica would need the same database file: a SQLite file serves one process (the exporter refuses a second one), and a ReadWriteOnce volume reaches one node. Replicas share one PostgreSQL database and elect a leader there." }}
{{- end }}
{{- if and (eq .Values.database.type "postgresql") (not .Values.secrets.existingSecret) (not .Values.database.url) }}
{{- fail "database.type: postgresql needs database.url (postgresql://user:password@host/name) or secrets.existingSecret with the key database-url." }}
{{- end }}
{{- end }}
