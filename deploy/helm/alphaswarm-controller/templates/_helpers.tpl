{{- define "alphaswarm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "alphaswarm.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "alphaswarm.labels" -}}
{{ include "alphaswarm.selectorLabels" . }}
app.kubernetes.io/part-of: alphaswarm
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "alphaswarm.tokensSecret" -}}
{{- .Values.tokens.existingSecret | default (printf "%s-tokens" (include "alphaswarm.fullname" .)) -}}
{{- end -}}

{{/* The server's settings: the chart's, then .Values.settings over them. */}}
{{- define "alphaswarm.settings" -}}
{{- $s := dict
  "ALPHASWARM_CP_LISTEN" (printf "0.0.0.0:%v" .Values.service.port)
  "ALPHASWARM_CP_TOKENS_FILE" "/etc/alphaswarm/tokens/tokens.yaml"
  "ALPHASWARM_CP_REFLECTION" "auth"
  "ALPHASWARM_CP_PROVIDER" "kubernetes"
  "ALPHASWARM_CP_STATE_DIR" "/var/lib/alphaswarm"
  "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS" (toString .Values.shutdownGraceSeconds)
  "ALPHASWARM_CP_LOG_LEVEL" .Values.logLevel
  "ALPHASWARM_CP_LOG_FORMAT" "json"
  "ALPHASWARM_CP_METRICS_LISTEN" (printf "0.0.0.0:%v" .Values.metrics.port)
  "ALPHASWARM_KUBERNETES_NAMESPACE" .Values.workloadNamespace
  "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES" "false"
-}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $s "ALPHASWARM_CP_INSECURE" "false" -}}
{{- $_ := set $s "ALPHASWARM_CP_TLS_CERT" "/etc/alphaswarm/tls/tls.crt" -}}
{{- $_ := set $s "ALPHASWARM_CP_TLS_KEY" "/etc/alphaswarm/tls/tls.key" -}}
{{- $_ := set $s "ALPHASWARM_CP_TLS_CLIENT_CA" "/etc/alphaswarm/tls/ca.crt" -}}
{{- $_ := set $s "ALPHASWARM_HEALTHCHECK_CA" "/etc/alphaswarm/tls/ca.crt" -}}
{{- $_ := set $s "ALPHASWARM_HEALTHCHECK_CLIENT_CERT" "/etc/alphaswarm/probe/tls.crt" -}}
{{- $_ := set $s "ALPHASWARM_HEALTHCHECK_CLIENT_KEY" "/etc/alphaswarm/probe/tls.key" -}}
{{- $_ := set $s "ALPHASWARM_HEALTHCHECK_SERVER_NAME" (.Values.tls.serverName | default (printf "%s.%s.svc" (include "alphaswarm.fullname" .) .Release.Namespace)) -}}
{{- else -}}
{{- /* Plaintext on the pod network: the kubelet's gRPC probes cannot speak TLS. */ -}}
{{- $_ := set $s "ALPHASWARM_CP_INSECURE" "true" -}}
{{- end -}}
{{- range $key, $value := .Values.settings -}}
{{- $_ := set $s $key (toString $value) -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}
