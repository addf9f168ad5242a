{{- define "relay.name" -}}{{ .Release.Name }}{{- end -}}

{{- define "relay.labels" -}}
app.kubernetes.io/name: clusterconnect-relay
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "relay.selector" -}}
app.kubernetes.io/name: clusterconnect-relay
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "relay.configSecret" -}}
{{ .Values.config.existingSecret | default (printf "%s-config" .Release.Name) }}
{{- end -}}

{{- define "relay.replicas" -}}
{{ if .Values.fleet.enabled }}{{ .Values.fleet.replicas }}{{ else }}1{{ end }}
{{- end -}}
