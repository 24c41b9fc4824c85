{{/* Names. Everything is prefixed with fullnameOverride (default "blixt"). */}}
{{- define "blixt.fullname" -}}
{{- .Values.fullnameOverride | default .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "blixt.controller.name" -}}
{{- printf "%s-controller" (include "blixt.fullname" .) -}}
{{- end -}}

{{- define "blixt.agent.name" -}}
{{- printf "%s-agent" (include "blixt.fullname" .) -}}
{{- end -}}

{{- define "blixt.controller.serviceAccountName" -}}
{{- .Values.controller.serviceAccount.name | default (include "blixt.controller.name" .) -}}
{{- end -}}

{{- define "blixt.agent.serviceAccountName" -}}
{{- .Values.agent.serviceAccount.name | default (include "blixt.agent.name" .) -}}
{{- end -}}

{{- define "blixt.tls.secretName" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "blixt.controller.name" .)) -}}
{{- end -}}

{{- define "blixt.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "blixt.labels" -}}
app.kubernetes.io/name: blixt
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: blixt
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component ("controller" or "agent"); never change across upgrades. */}}
{{- define "blixt.selectorLabels" -}}
app.kubernetes.io/name: blixt
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "blixt.componentLabels" -}}
{{ include "blixt.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The controller's ServiceAccount as a user name, e.g. for SubjectAccessReviews. */}}
{{- define "blixt.controller.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "blixt.controller.serviceAccountName" .) -}}
{{- end -}}

{{/* The AddressPool the GatewayClass refers to, if any. */}}
{{- define "blixt.gatewayClass.addressPool" -}}
{{- if .Values.gatewayClass.addressPoolName -}}
{{- .Values.gatewayClass.addressPoolName -}}
{{- else if .Values.addressPool.create -}}
{{- .Values.addressPool.name -}}
{{- end -}}
{{- end -}}
