{{- define "agent.name" -}}{{ .Release.Name }}{{- end -}}

{{- define "agent.labels" -}}
app.kubernetes.io/name: clusterconnect-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "agent.selector" -}}
app.kubernetes.io/name: clusterconnect-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agent.secretName" -}}
{{ .Values.credential.existingSecret | default (printf "%s-credential" .Release.Name) }}
{{- end -}}
