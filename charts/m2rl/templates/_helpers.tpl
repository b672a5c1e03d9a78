{{/* The chart name, at most 63 characters. */}}
{{- define "m2rl.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, plus the chart name unless it already contains it. */}}
{{- define "m2rl.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "m2rl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "m2rl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "m2rl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "m2rl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "m2rl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "m2rl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "m2rl.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The namespace watched in namespace scope. */}}
{{- define "m2rl.watchNamespace" -}}
{{- default .Release.Namespace .Values.watch.namespace -}}
{{- end -}}

{{- define "m2rl.clusterScoped" -}}
{{- if eq .Values.watch.scope "cluster" -}}true{{- end -}}
{{- end -}}

{{- define "m2rl.trainerImage" -}}
{{- default (printf "ghcr.io/m2rl/trainer:%s" .Chart.AppVersion) .Values.images.trainer -}}
{{- end -}}

{{/* Where the PodMonitors look for the pods the operator creates: the namespaces it watches. */}}
{{- define "m2rl.monitoredNamespaces" -}}
{{- if include "m2rl.clusterScoped" . -}}
any: true
{{- else -}}
matchNames:
  - {{ include "m2rl.watchNamespace" . }}
{{- end -}}
{{- end -}}
