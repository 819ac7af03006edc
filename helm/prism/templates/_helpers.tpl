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

{{/* True (non-empty) when this chart runs Qdrant itself: no external URL and inCluster.deploy. */}}
{{- define "prism.qdrantDeployed" -}}
{{- if and (not .Values.qdrant.url) .Values.qdrant.inCluster.deploy -}}true{{- end -}}
{{- end -}}

{{/* Name of the in-cluster Qdrant Service: this chart's StatefulSet, or the existing serviceName. */}}
{{- define "prism.qdrantService" -}}
{{- if include "prism.qdrantDeployed" . -}}
{{- include "prism.componentName" (dict "root" . "name" "qdrant") -}}
{{- else -}}
{{- .Values.qdrant.inCluster.serviceName -}}
{{- end -}}
{{- end -}}

{{/* The Qdrant URL: external when set, else the in-cluster Service. */}}
{{- define "prism.qdrantUrl" -}}
{{- if .Values.qdrant.url -}}
{{- .Values.qdrant.url -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "prism.qdrantService" .) .Release.Namespace (int .Values.qdrant.inCluster.port) -}}
{{- end -}}
{{- end -}}

{{/*
Refuse Qdrant layouts that cannot work (the same rule as IndexedServiceSettings in prism/index.py):
writes that need more copies than exist, several in-cluster pods without cluster mode (independent
databases behind one Service), more replicas of a shard than in-cluster nodes.
*/}}
{{- define "prism.qdrantChecks" -}}
{{- $c := .Values.qdrant.collection -}}
{{- if gt (int $c.writeConsistencyFactor) (max 1 (int $c.replicationFactor) | int) -}}
{{- fail (printf "qdrant.collection.writeConsistencyFactor %d exceeds the %d cop(ies) of each shard (replicationFactor): no write could succeed" (int $c.writeConsistencyFactor) (max 1 (int $c.replicationFactor) | int)) -}}
{{- end -}}
{{- if include "prism.qdrantDeployed" . -}}
{{- $in := .Values.qdrant.inCluster -}}
{{- if and (gt (int $in.replicas) 1) (not $in.cluster.enabled) -}}
{{- fail "qdrant.inCluster.replicas > 1 needs qdrant.inCluster.cluster.enabled" -}}
{{- end -}}
{{- if gt (int $c.replicationFactor) (int $in.replicas) -}}
{{- fail (printf "qdrant.collection.replicationFactor %d exceeds qdrant.inCluster.replicas %d" (int $c.replicationFactor) (int $in.replicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of the trained-models claim: an existing one, or the chart's. */}}
{{- define "prism.modelsClaim" -}}
{{- default (include "prism.componentName" (dict "root" . "name" "models")) .Values.models.existingClaim -}}
{{- end -}}

{{/*
OpenTelemetry env of one workload (read by prism/tracing.py and the OpenTelemetry SDK).
Call with (dict "root" $ "name" $serviceName); renders nothing while tracing is disabled.
*/}}
{{- define "prism.tracingEnv" -}}
{{- $t := .root.Values.tracing -}}
{{- if $t.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ .name | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.endpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
{{- if ne (toString $t.samplerArg) "" }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | toString | quote }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=%s,service.version=%s,k8s.namespace.name=%s" (include "prism.fullname" .root) .root.Chart.AppVersion .root.Release.Namespace | quote }}
{{- end }}
{{- end -}}

{{/*
Init container that holds a pod until `prism train` has written a version into the models volume
(the files prism.training.heads.resolve_version accepts), on the service's own image.
Call with (dict "root" $ "svc" $svc).
*/}}
{{- define "prism.waitForModels" -}}
{{- $dir := .root.Values.models.mountPath -}}
- name: wait-for-models
  image: {{ include "prism.image" . }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command:
    - sh
    - -c
    - >-
      until test -f {{ $dir }}/manifest.json || test -f {{ $dir }}/image_head.safetensors;
      do echo "waiting for trained models in {{ $dir }} (prism train)"; sleep 10; done
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ $dir }}
      readOnly: true
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
    limits:
      memory: 64Mi
{{- end -}}
