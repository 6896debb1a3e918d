{{/* Name of the chart. */}}
{{- define "dreambot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Base name of every object: the release name, or <release>-dreambot. */}}
{{- define "dreambot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "dreambot.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "dreambot.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one component: pass (dict "ctx" . "component" "operator"). */}}
{{- define "dreambot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dreambot.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full labels of one component. */}}
{{- define "dreambot.labels" -}}
{{ include "dreambot.selectorLabels" . }}
app.kubernetes.io/part-of: dreambot
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The DreamBot image (operator, console, stages and jobs all run it). */}}
{{- define "dreambot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "dreambot.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "dreambot.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* In-cluster service addresses (used as defaults by the console and the example session). */}}
{{- define "dreambot.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "dreambot.fullname" .) -}}
{{- else -}}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "dreambot.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s-kafka:9092" (include "dreambot.fullname" .) -}}
{{- else -}}
{{- required "kafka.bootstrap is required when kafka.enabled is false" .Values.kafka.bootstrap -}}
{{- end -}}
{{- end -}}

{{- define "dreambot.mlflowUrl" -}}
{{- if .Values.mlflow.enabled -}}
{{- printf "http://%s-mlflow:5000" (include "dreambot.fullname" .) -}}
{{- else -}}
{{- .Values.mlflow.trackingUri -}}
{{- end -}}
{{- end -}}

{{/* Restricted pod security for DreamBot's own containers. */}}
{{- define "dreambot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dreambot.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Console users as DREAMBOT_CONSOLE_USERS entries (name:role:hash, one per line). */}}
{{- define "dreambot.consoleUsers" -}}
{{- range .Values.console.auth.users }}
{{ printf "%s:%s:%s" .name .role .passwordHash }}
{{- end }}
{{- end }}

{{/* Host names the console answers to: loopback (port-forward), its Service names, and extras. */}}
{{- define "dreambot.consoleHosts" -}}
{{- $svc := printf "%s-console" (include "dreambot.fullname" .) -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list "localhost" "127.0.0.1" "::1" $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- join "," (concat $hosts .Values.console.auth.allowedHosts) -}}
{{- end }}
