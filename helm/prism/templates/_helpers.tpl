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

{{/* True (non-empty) when this chart runs RabbitMQ itself (rabbitmq.inCluster.enabled). */}}
{{- define "prism.rabbitmqDeployed" -}}
{{- if .Values.rabbitmq.inCluster.enabled -}}true{{- end -}}
{{- end -}}

{{/* Name of the in-cluster RabbitMQ's client Service, StatefulSet and generated Secret. */}}
{{- define "prism.rabbitmqService" -}}
{{- include "prism.componentName" (dict "root" . "name" "rabbitmq") -}}
{{- end -}}

{{/* The headless Service that names the RabbitMQ pods (and that peer discovery lists). */}}
{{- define "prism.rabbitmqHeadless" -}}
{{- printf "%s-headless" (include "prism.rabbitmqService" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The in-cluster RabbitMQ's Secret (username, password, erlang-cookie, amqp-url): existing or generated. */}}
{{- define "prism.rabbitmqSecret" -}}
{{- default (include "prism.rabbitmqService" .) .Values.rabbitmq.inCluster.auth.existingSecret -}}
{{- end -}}

{{/*
The AMQP URL of the in-cluster broker, as the generated Secret holds it. The default vhost "/" is
written %2F, which kombu (the workers), MinIO's and KEDA's AMQP clients all read as "/".
Call with (dict "root" $ "username" $username "password" $password).
*/}}
{{- define "prism.rabbitmqUrl" -}}
{{- printf "amqp://%s:%s@%s.%s.svc:%d/%%2F" (urlquery .username) (urlquery .password) (include "prism.rabbitmqService" .root) .root.Release.Namespace (int .root.Values.rabbitmq.inCluster.port) -}}
{{- end -}}

{{/* The Secret holding the AMQP URL every broker user reads: the in-cluster one, or external.secretName. */}}
{{- define "prism.brokerSecretName" -}}
{{- if include "prism.rabbitmqDeployed" . -}}
{{- include "prism.rabbitmqSecret" . -}}
{{- else -}}
{{- .Values.rabbitmq.external.secretName -}}
{{- end -}}
{{- end -}}

{{/* That Secret's key holding the URL. */}}
{{- define "prism.brokerSecretKey" -}}
{{- if include "prism.rabbitmqDeployed" . -}}
amqp-url
{{- else -}}
{{- .Values.rabbitmq.external.secretKey -}}
{{- end -}}
{{- end -}}

{{/*
rabbitmq.conf of the in-cluster nodes (the ConfigMap; its hash rolls the pods when it changes). The
default user and password are added at start from the Secret (conf.d), never stored here.
*/}}
{{- define "prism.rabbitmqConf" -}}
{{- $in := .Values.rabbitmq.inCluster -}}
{{- $headless := include "prism.rabbitmqHeadless" . -}}
{{- $memory := toString $in.resources.limits.memory -}}
{{- $unit := ternary 1073741824 1048576 (hasSuffix "Gi" $memory) -}}
{{- $limit := mul (regexReplaceAll "(Mi|Gi)$" $memory "" | int64) $unit -}}
# Queues declared without x-queue-type are quorum queues (replicated over the nodes by Raft). The
# ingest workers declare theirs quorum explicitly (services/ingest/app.py,
# IngestApp.queue_arguments: "x-queue-type": "quorum"); this holds the same for any other client.
default_queue_type = quorum
# Cluster formation on a node's first boot: its peers are the pods behind the headless Service,
# listed through the Kubernetes API (rabbitmq_peer_discovery_k8s; the Role grants `get endpoints`),
# addressed by their stable names <pod><hostname_suffix> (RABBITMQ_NODENAME).
cluster_formation.peer_discovery_backend = rabbit_peer_discovery_k8s
cluster_formation.k8s.address_type = hostname
cluster_formation.k8s.service_name = {{ $headless }}
cluster_formation.k8s.hostname_suffix = .{{ $headless }}.{{ .Release.Namespace }}.svc.{{ $in.clusterDomain }}
# A pod missing from the endpoints is being rescheduled, not gone: never remove it from the cluster.
cluster_formation.node_cleanup.only_log_warning = true
# The side of a network partition without a majority pauses, like the quorum queues themselves.
cluster_partition_handling = pause_minority
listeners.tcp.default = {{ $in.port }}
management.tcp.port = {{ $in.managementPort }}
prometheus.tcp.port = {{ $in.metricsPort }}
# The node cannot see the container's memory limit: 80% of it (the memory alarm is 40% of this).
total_memory_available_override_value = {{ div (mul $limit 4) 5 }}
log.console = true
log.console.level = info
log.file = false
{{- end -}}

{{/* True (non-empty) when this chart runs MinIO itself (minio.inCluster.enabled). */}}
{{- define "prism.minioDeployed" -}}
{{- if .Values.minio.inCluster.enabled -}}true{{- end -}}
{{- end -}}

{{/* Name of the in-cluster MinIO's client Service, StatefulSet and generated Secret. */}}
{{- define "prism.minioService" -}}
{{- include "prism.componentName" (dict "root" . "name" "minio") -}}
{{- end -}}

{{/* The headless Service that names the MinIO pods (the distributed server's node list). */}}
{{- define "prism.minioHeadless" -}}
{{- printf "%s-headless" (include "prism.minioService" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The in-cluster MinIO's Secret (access-key, secret-key: the root user): existing or generated. */}}
{{- define "prism.minioSecret" -}}
{{- default (include "prism.minioService" .) .Values.minio.inCluster.auth.existingSecret -}}
{{- end -}}

{{/* host:port of the S3 API the services use (PRISM_STORE_ENDPOINT): the in-cluster Service, or external.endpoint. */}}
{{- define "prism.storeEndpoint" -}}
{{- if include "prism.minioDeployed" . -}}
{{- printf "%s.%s.svc:%d" (include "prism.minioService" .) .Release.Namespace (int .Values.minio.inCluster.port) -}}
{{- else -}}
{{- .Values.minio.external.endpoint -}}
{{- end -}}
{{- end -}}

{{/* "true" when the S3 API is HTTPS (PRISM_STORE_SECURE): in-cluster plain HTTP, external as configured. */}}
{{- define "prism.storeSecure" -}}
{{- if include "prism.minioDeployed" . -}}
false
{{- else -}}
{{- .Values.minio.external.secure | toString -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the store's access and secret keys, and those two keys. */}}
{{- define "prism.storeSecretName" -}}
{{- if include "prism.minioDeployed" . -}}
{{- include "prism.minioSecret" . -}}
{{- else -}}
{{- .Values.minio.external.secretName -}}
{{- end -}}
{{- end -}}

{{- define "prism.storeAccessKeyKey" -}}
{{- if include "prism.minioDeployed" . -}}
access-key
{{- else -}}
{{- .Values.minio.external.accessKeyKey -}}
{{- end -}}
{{- end -}}

{{- define "prism.storeSecretKeyKey" -}}
{{- if include "prism.minioDeployed" . -}}
secret-key
{{- else -}}
{{- .Values.minio.external.secretKeyKey -}}
{{- end -}}
{{- end -}}

{{/*
The ARN of the AMQP notification target the workers subscribe the bucket to (PRISM_STORE_NOTIFY_ARN):
the in-cluster MinIO's target (MINIO_NOTIFY_AMQP_*_<target>), or external.notifyArn (may be empty).
*/}}
{{- define "prism.storeNotifyArn" -}}
{{- if include "prism.minioDeployed" . -}}
{{- printf "arn:minio:sqs::%s:amqp" .Values.minio.inCluster.notify.target -}}
{{- else -}}
{{- .Values.minio.external.notifyArn -}}
{{- end -}}
{{- end -}}

{{/* Refuse an object store the services could not reach: external without an endpoint. */}}
{{- define "prism.storeChecks" -}}
{{- if and (not (include "prism.minioDeployed" .)) (not .Values.minio.external.endpoint) -}}
{{- fail "minio.external.endpoint (host:port of the S3 API) is required when minio.inCluster.enabled is false" -}}
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
