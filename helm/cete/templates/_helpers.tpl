{{/* Chart name, overridable with nameOverride. */}}
{{- define "cete.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: <release>-cete unless fullnameOverride is set. */}}
{{- define "cete.fullname" -}}
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

{{/* The headless Service that gives each pod a stable DNS name. */}}
{{- define "cete.headlessName" -}}
{{- printf "%s-headless" (include "cete.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* DNS suffix of the pods: <headless>.<namespace>.svc.<clusterDomain>. */}}
{{- define "cete.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "cete.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "cete.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cete.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cete.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cete.labels" -}}
helm.sh/chart: {{ include "cete.chart" . }}
{{ include "cete.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
