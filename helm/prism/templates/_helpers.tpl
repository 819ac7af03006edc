{{/*
Helpers shared by the templates. The project's machines have no helm binary (and kubectl's built-in
kustomize renders charts only through one), so tests/unit/test_deploy_config.py checks the templates
statically, and renders them with Helm's engine only where helm-python-sdk is installed.
*/}}

{{- define "prism.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prism.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "prism.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "prism.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one service's objects. Call with (dict "root" $ "name" $name). */}}
{{- define "prism.componentName" -}}
{{- printf "%s-%s" (include "prism.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pod selector of one service. Call with (dict "root" $ "name" $name). */}}
{{- define "prism.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prism.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* All labels of one service's objects. Call with (dict "root" $ "name" $name). */}}
{{- define "prism.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "prism.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: prism
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/*
Image of one service. A service's own image.tag is used as it is; otherwise image.tag (default: the
appVersion), plus image.gpuTagSuffix for services on GPUs. Call with (dict "root" $ "svc" $svc).
*/}}
{{- define "prism.image" -}}
{{- $repository := default .root.Values.image.repository .svc.image.repository -}}
{{- $tag := .svc.image.tag -}}
{{- if not $tag -}}
{{- $tag = default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- if .svc.gpu.enabled -}}
{{- $tag = printf "%s%s" $tag .root.Values.image.gpuTagSuffix -}}
{{- end -}}
{{- end -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The Qdrant URL: external when set, else the in-cluster Service. */}}
{{- define "prism.qdrantUrl" -}}
{{- if .Values.qdrant.url -}}
{{- .Values.qdrant.url -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" .Values.qdrant.inCluster.serviceName .Release.Namespace (int .Values.qdrant.inCluster.port) -}}
{{- end -}}
{{- end -}}
