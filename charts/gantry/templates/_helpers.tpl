{{/* Names and labels. */}}
{{- define "gantry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gantry.fullname" -}}
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

{{- define "gantry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gantry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gantry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "gantry.labels" -}}
helm.sh/chart: {{ include "gantry.chart" . }}
{{ include "gantry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gantry
{{- end }}

{{- define "gantry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gantry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gantry.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ProxyConfig the IngressClass points to ("" for none). */}}
{{- define "gantry.proxyConfigName" -}}
{{- if .Values.ingressClass.parametersName }}
{{- .Values.ingressClass.parametersName }}
{{- else if .Values.proxyConfig.create }}
{{- include "gantry.fullname" . }}
{{- end }}
{{- end }}

{{- define "gantry.electionId" -}}
{{- default (printf "%s-leader" (include "gantry.fullname" .)) .Values.controller.electionId }}
{{- end }}

{{/* NAMESPACE/NAME of the Service whose addresses go into Ingress status ("" for none). */}}
{{- define "gantry.publishService" -}}
{{- if .Values.controller.publishService.enabled }}
{{- if .Values.controller.publishService.pathOverride }}
{{- .Values.controller.publishService.pathOverride }}
{{- else if .Values.service.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "gantry.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The --backend-mode flag: node-port also when the chart's ProxyConfig asks for NodePort, since only
the flag makes the controller watch Nodes (a ProxyConfig edited later to NodePort needs it too).
*/}}
{{- define "gantry.backendMode" -}}
{{- if or (eq .Values.controller.backendMode "node-port") (and .Values.proxyConfig.create (eq (toString (dig "backendMode" "" .Values.proxyConfig.spec)) "NodePort")) }}node-port
{{- else }}{{ .Values.controller.backendMode }}
{{- end }}
{{- end }}

{{/*
Whether the controller reads Nodes: in node-port mode (backend addresses), and when it publishes a
NodePort Service (the Nodes' addresses go into Ingress status). "true" or "".
*/}}
{{- define "gantry.needsNodes" -}}
{{- if eq (include "gantry.backendMode" .) "node-port" }}true
{{- else if and (include "gantry.publishService" .) .Values.controller.publishService.pathOverride }}true
{{- else if and (include "gantry.publishService" .) (eq .Values.service.type "NodePort") }}true
{{- end }}
{{- end }}

{{- define "gantry.terminationGracePeriodSeconds" -}}
{{- $drain := add .Values.controller.preStopSleepSeconds .Values.controller.shutdownGraceSeconds }}
{{- if kindIs "invalid" .Values.controller.terminationGracePeriodSeconds }}
{{- add $drain 5 }}
{{- else if le (int .Values.controller.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "controller.terminationGracePeriodSeconds (%v) must be larger than preStopSleepSeconds + shutdownGraceSeconds (%v), or in-flight requests are cut off" .Values.controller.terminationGracePeriodSeconds $drain) }}
{{- else }}
{{- .Values.controller.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}
