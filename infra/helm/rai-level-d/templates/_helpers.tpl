{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "rai.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's name prefix; component names append at most 16 characters to it. */}}
{{- define "rai.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rai.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: call with (dict "ctx" $ "component" "api") ----------------------------------- */}}

{{- define "rai.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rai.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rai.labels" -}}
{{ include "rai.selectorLabels" . }}
app.kubernetes.io/part-of: rai-level-d
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "rai.chart" .ctx }}
{{- end -}}

{{/* Images --------------------------------------------------------------------------------- */}}

{{/* repository@digest when a digest is given, else repository:tag. Call with (dict "image" X
     "defaultTag" T). */}}
{{- define "rai.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .defaultTag .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "rai.image" -}}
{{- include "rai.imageRef" (dict "image" .Values.image "defaultTag" .Chart.AppVersion) -}}
{{- end -}}

{{- define "rai.trainerImage" -}}
{{- if .Values.trainer.image.repository -}}
{{- include "rai.imageRef" (dict "image" .Values.trainer.image "defaultTag" .Chart.AppVersion) -}}
{{- else -}}
{{- include "rai.image" . -}}
{{- end -}}
{{- end -}}

{{/* Empty when there are none; callers write it through `with`. */}}
{{- define "rai.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Restricted Pod Security (M10), for every pod of the chart ------------------------------ */}}

{{- define "rai.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.runAsUser }}
  runAsGroup: {{ .Values.runAsGroup }}
  fsGroup: {{ .Values.runAsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Repeated on each container so it holds even where a pod-level field is overridden. */}}
{{- define "rai.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.runAsUser }}
  runAsGroup: {{ .Values.runAsGroup }}
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  privileged: false
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The read-only root needs a writable /tmp (tempfiles, RAI_STATE_DIR). */}}
{{- define "rai.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "rai.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Addresses ---------------------------------------------------------------------------- */}}

{{- define "rai.apiServiceName" -}}
{{- printf "%s-api" (include "rai.fullname" .) -}}
{{- end -}}

{{- define "rai.redisName" -}}
{{- printf "%s-redis" (include "rai.fullname" .) -}}
{{- end -}}

{{/* What training Jobs POST their signed completion to (RAI_CALLBACK_URL). */}}
{{- define "rai.callbackUrl" -}}
{{- $svc := include "rai.apiServiceName" . -}}
{{- printf "http://%s.%s.svc.%s:%v/v1/callbacks/training" $svc .Release.Namespace .Values.clusterDomain .Values.api.service.port -}}
{{- end -}}

{{/* The server and database only: services derive their rai_app login from it and
     RAI_APP_DB_PASSWORD (settings.app_dsn_for), so no administrative credential reaches them. */}}
{{- define "rai.databaseAddress" -}}
{{- $db := .Values.database -}}
{{- printf "postgresql://%s:%v/%s?sslmode=%s" $db.host $db.port $db.name $db.sslmode -}}
{{- end -}}

{{/* Environment ---------------------------------------------------------------------------- */}}

{{- define "rai.temporalEnv" -}}
- name: RAI_TEMPORAL_ADDRESS
  value: {{ .Values.temporal.address | quote }}
- name: RAI_TEMPORAL_NAMESPACE
  value: {{ .Values.temporal.namespace | quote }}
- name: RAI_TEMPORAL_UI_URL
  value: {{ .Values.temporal.uiUrl | quote }}
{{- end -}}

{{- define "rai.appDatabaseEnv" -}}
- name: RAI_DATABASE_URL
  value: {{ include "rai.databaseAddress" . | quote }}
- name: RAI_APP_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.appPasswordKey }}
{{- end -}}

{{/* The workers' metrics collector reads the cross-tenant gauges as rai_metrics (the same
     server and database, settings.metrics_dsn_for); the API never gets this password. */}}
{{- define "rai.metricsDatabaseEnv" -}}
- name: RAI_METRICS_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.metricsPasswordKey }}
{{- end -}}

{{- define "rai.s3Env" -}}
- name: RAI_S3_ENDPOINT_URL
  value: {{ .Values.s3.endpointUrl | quote }}
- name: RAI_S3_REGION
  value: {{ .Values.s3.region | quote }}
- name: RAI_S3_REGISTRY_BUCKET
  value: {{ .Values.s3.registryBucket | quote }}
- name: RAI_S3_DATASETS_BUCKET
  value: {{ .Values.s3.datasetsBucket | quote }}
- name: RAI_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.accessKeyKey }}
- name: RAI_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.secretKeyKey }}
{{- end -}}

{{/* The in-chart Redis' password is spliced into the URL by the kubelet ($(VAR) expansion of
     an earlier variable), so it stays in the Secret, never in the manifest. */}}
{{- define "rai.redisEnv" -}}
{{- $redis := .Values.redis -}}
{{- if $redis.internal.enabled -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $redis.internal.auth.existingSecret }}
      key: {{ $redis.internal.auth.passwordKey }}
- name: RAI_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s.%s.svc.%s:6379/0" (include "rai.redisName" .) .Release.Namespace .Values.clusterDomain | quote }}
{{- else if $redis.external.existingSecret -}}
- name: RAI_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $redis.external.existingSecret }}
      key: {{ $redis.external.urlKey }}
{{- else -}}
- name: RAI_REDIS_URL
  value: {{ required "redis.external.url or redis.external.existingSecret is required when redis.internal.enabled is false" $redis.external.url | quote }}
{{- end }}
- name: RAI_REDIS_REQUIRE_AOF
  value: {{ $redis.requireAof | quote }}
{{- end -}}

{{/* What the Kubernetes job runner of the training worker reads (worker-flags contract). */}}
{{- define "rai.trainerEnv" -}}
{{- $t := .Values.trainer -}}
- name: RAI_JOB_RUNNER
  value: kubernetes
- name: RAI_K8S_NAMESPACE
  value: {{ .Values.trainingNamespace.name | quote }}
- name: RAI_CALLBACK_URL
  value: {{ include "rai.callbackUrl" . | quote }}
- name: RAI_TRAINER_IMAGE
  value: {{ include "rai.trainerImage" . | quote }}
{{- with $t.imagePullSecrets }}
- name: RAI_TRAINER_IMAGE_PULL_SECRETS
  value: {{ join "," . | quote }}
{{- end }}
- name: RAI_TRAINER_GPU_COUNT
  value: {{ $t.gpuCount | quote }}
- name: RAI_TRAINER_CPU_REQUEST
  value: {{ $t.cpuRequest | quote }}
- name: RAI_TRAINER_CPU_LIMIT
  value: {{ $t.cpuLimit | quote }}
- name: RAI_TRAINER_MEMORY_REQUEST
  value: {{ $t.memoryRequest | quote }}
- name: RAI_TRAINER_MEMORY_LIMIT
  value: {{ $t.memoryLimit | quote }}
- name: RAI_TRAINER_ACTIVE_DEADLINE_SECONDS
  value: {{ $t.activeDeadlineSeconds | quote }}
- name: RAI_TRAINER_TTL_SECONDS_AFTER_FINISHED
  value: {{ $t.ttlSecondsAfterFinished | quote }}
{{- with $t.s3ExistingSecret }}
- name: RAI_TRAINER_S3_SECRET
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "rai.redisConf" -}}
appendonly yes
appendfsync everysec
maxmemory {{ .Values.redis.internal.maxmemory }}
maxmemory-policy noeviction
dir /data
port 6379
{{- end -}}
