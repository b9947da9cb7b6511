{{/* The pod template shared by the Deployment and the DaemonSet. */}}
{{- define "gantry.podTemplate" -}}
metadata:
  labels:
    {{- include "gantry.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Roll the pods when the flags change (the ProxyConfig needs no restart).
    checksum/args: {{ include "gantry.args" . | sha256sum | trunc 16 }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "gantry.serviceAccountName" . }}
  # The ServiceAccount does not mount its token into every pod; this pod needs it (cluster mode).
  automountServiceAccountToken: true
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- if .Values.hostNetwork }}
  {{- if .Values.hostPorts.enabled }}
  {{- fail "hostNetwork and hostPorts.enabled exclude each other: with hostNetwork the proxy already listens on the node's ports controller.ports.http and controller.ports.https" }}
  {{- end }}
  hostNetwork: true
  {{- end }}
  dnsPolicy: {{ default (ternary "ClusterFirstWithHostNet" "ClusterFirst" .Values.hostNetwork) .Values.dnsPolicy }}
  terminationGracePeriodSeconds: {{ include "gantry.terminationGracePeriodSeconds" . }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: gantry
      image: {{ include "gantry.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        {{- include "gantry.args" . | nindent 8 }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: GANTRY_LOG
          value: {{ .Values.controller.logLevel | quote }}
        {{- with .Values.controller.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.controller.ports.http }}
          protocol: TCP
          {{- if .Values.hostPorts.enabled }}
          hostPort: {{ .Values.hostPorts.http }}
          {{- end }}
        - name: https
          containerPort: {{ .Values.controller.ports.https }}
          protocol: TCP
          {{- if .Values.hostPorts.enabled }}
          hostPort: {{ .Values.hostPorts.https }}
          {{- end }}
        - name: admin
          containerPort: {{ .Values.controller.ports.admin }}
          protocol: TCP
      {{- with .Values.controller.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.controller.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.controller.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      lifecycle:
        # The drain: readiness is still 200 during the sleep, while endpoints and load balancers
        # drop the pod; then SIGTERM turns /readyz to 503, closes the listeners and gives requests
        # in flight --shutdown-grace to finish. The image has no shell, hence `sleep`, not `exec`.
        preStop:
          sleep:
            seconds: {{ .Values.controller.preStopSleepSeconds }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range .Values.topologySpreadConstraints }}
    - {{ toYaml (merge (dict) . (dict "labelSelector" (dict "matchLabels" (include "gantry.selectorLabels" $ | fromYaml)))) | nindent 6 | trim }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* The container's flags; names as in `gantry --help` (controller/src/cli.rs). */}}
{{- define "gantry.args" -}}
- --ingress-class={{ .Values.ingressClass.name }}
- --controller-name={{ .Values.controller.controllerName }}
- --gateway-controller-name={{ if .Values.gatewayAPI.enabled }}{{ .Values.gatewayAPI.controllerName }}{{ else }}off{{ end }}
{{- with .Values.gatewayAPI.addressPool }}
- --gateway-address-pool={{ . }}
{{- end }}
- --gateway-http-port={{ .Values.service.ports.http }}
- --gateway-https-port={{ .Values.service.ports.https }}
- --backend-mode={{ include "gantry.backendMode" . }}
- --load-balance={{ .Values.controller.loadBalance }}
- --http-addr=0.0.0.0:{{ .Values.controller.ports.http }}
- --https-addr=0.0.0.0:{{ .Values.controller.ports.https }}
- --admin-addr=0.0.0.0:{{ .Values.controller.ports.admin }}
- --shutdown-grace={{ .Values.controller.shutdownGraceSeconds }}s
- --access-log={{ .Values.controller.accessLog }}
- --log-format={{ .Values.controller.logFormat }}
- --election-id={{ include "gantry.electionId" . }}
- --election-namespace={{ .Release.Namespace }}
{{- with .Values.controller.defaultSslCertificate }}
- --default-ssl-certificate={{ . }}
{{- end }}
{{- range .Values.controller.watchNamespaces }}
- --watch-namespace={{ . }}
{{- end }}
{{- with include "gantry.publishService" . }}
- --publish-service={{ . }}
{{- else }}
{{- with .Values.controller.publishStatusAddress }}
- --publish-status-address={{ join "," . }}
{{- end }}
{{- end }}
{{- with .Values.controller.workerThreads }}
- --worker-threads={{ . }}
{{- end }}
{{- range .Values.controller.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
