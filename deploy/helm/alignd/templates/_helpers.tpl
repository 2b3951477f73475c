{{/* Names, labels, images and the environment every alignd container shares. */}}

{{- define "alignd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "alignd.fullname" -}}
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

{{- define "alignd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "alignd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: alignd
{{- end }}

{{/* Selector labels for one component: include with (dict "root" $ "component" "api"). */}}
{{- define "alignd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "alignd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "alignd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "alignd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "alignd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "alignd.gpuImage" -}}
{{- $repository := default .Values.image.repository .Values.gpuImage.repository }}
{{- printf "%s:%s" $repository (default (printf "%s-cuda" .Chart.AppVersion) .Values.gpuImage.tag) }}
{{- end }}

{{- define "alignd.configName" -}}{{ include "alignd.fullname" . }}-config{{- end }}
{{- define "alignd.secretName" -}}{{ include "alignd.fullname" . }}-secrets{{- end }}
{{- define "alignd.rayClusterName" -}}{{ include "alignd.fullname" . }}-ray{{- end }}

{{- define "alignd.databaseSecretName" -}}
{{- default (include "alignd.secretName" .) .Values.database.existingSecret }}
{{- end }}

{{- define "alignd.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}database-url{{ end }}
{{- end }}

{{- define "alignd.adminSecretName" -}}
{{- default (include "alignd.secretName" .) .Values.adminKey.existingSecret }}
{{- end }}

{{- define "alignd.adminSecretKey" -}}
{{- if .Values.adminKey.existingSecret }}{{ .Values.adminKey.existingSecretKey }}{{ else }}admin-key{{ end }}
{{- end }}

{{- define "alignd.rayAuthSecretName" -}}
{{- default (include "alignd.secretName" .) .Values.ray.auth.existingSecret }}
{{- end }}

{{- define "alignd.rayAuthSecretKey" -}}
{{- if .Values.ray.auth.existingSecret }}{{ .Values.ray.auth.existingSecretKey }}{{ else }}ray-auth-token{{ end }}
{{- end }}

{{/* GCS address of the chart's RayCluster: KubeRay names the head Service "<cluster>-head-svc". */}}
{{- define "alignd.rayAddress" -}}
{{- if .Values.ray.externalAddress }}
{{- .Values.ray.externalAddress }}
{{- else if .Values.dispatcher.joinRayCluster }}
{{- printf "%s-head-svc.%s.svc:%d" (include "alignd.rayClusterName" .) .Release.Namespace (int .Values.ray.gcsPort) }}
{{- else }}
{{- printf "ray://%s-head-svc.%s.svc:10001" (include "alignd.rayClusterName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "alignd.storageUri" -}}
{{- default (printf "%s/storage" .Values.storage.mountPath) .Values.storage.uri }}
{{- end }}

{{- define "alignd.usesVolume" -}}
{{- if and (not .Values.storage.uri) .Values.storage.persistence.enabled }}true{{ end }}
{{- end }}

{{- define "alignd.claimName" -}}
{{- default (printf "%s-data" (include "alignd.fullname" .)) .Values.storage.persistence.existingClaim }}
{{- end }}

{{/* Fail early, at render time, on settings that cannot work. */}}
{{- define "alignd.validate" -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) }}
{{- fail "database.url or database.existingSecret is required: alignd needs an external PostgreSQL (postgresql+psycopg://user:password@host:5432/alignd)" }}
{{- end }}
{{- if and .Values.database.url (not (hasPrefix "postgresql" .Values.database.url)) }}
{{- fail (printf "database.url must be a PostgreSQL SQLAlchemy URL (postgresql+psycopg://...), got scheme %q: SQLite cannot be shared between pods" (first (splitList ":" .Values.database.url))) }}
{{- end }}
{{- if and (not .Values.storage.uri) (not .Values.storage.persistence.enabled) }}
{{- fail "storage: set storage.uri (s3:// or gs://) or enable storage.persistence: the API, the dispatcher and the Ray workers must share files" }}
{{- end }}
{{- end }}

{{/*
Secret environment of alignd processes: include with (dict "root" $ "ray" true). The migration hook
passes ray=false: it runs before anything but the hook Secret exists.
*/}}
{{- define "alignd.env" -}}
{{- $root := .root }}
- name: ALIGND_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "alignd.databaseSecretName" $root }}
      key: {{ include "alignd.databaseSecretKey" $root }}
{{- if and .ray (ne $root.Values.ray.auth.mode "disabled") }}
{{ include "alignd.rayAuthEnv" $root }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Ray token, for every Ray node and driver when ray.auth.mode is token. */}}
{{- define "alignd.rayAuthEnv" -}}
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "alignd.rayAuthSecretName" . }}
      key: {{ include "alignd.rayAuthSecretKey" . }}
{{- end }}

{{- define "alignd.envFrom" -}}
- configMapRef:
    name: {{ include "alignd.configName" . }}
{{- with .Values.storage.credentialsSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{- define "alignd.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if include "alignd.usesVolume" . }}
- name: data
  mountPath: {{ .Values.storage.mountPath }}
{{- end }}
{{- end }}

{{- define "alignd.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if include "alignd.usesVolume" . }}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "alignd.claimName" . }}
{{- end }}
{{- end }}
