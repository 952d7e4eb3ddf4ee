{{/* Names and labels shared by every object of the release. */}}

{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names: the release name, with the chart name unless it already holds it. */}}
{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.leaseName" -}}
{{- default (include "portcullis.fullname" .) .Values.leaseName -}}
{{- end -}}

{{/*
The rules of files/clusterrole-rules.yaml, split in two: "lease" (the rules on leases,
granted only in the release namespace, where the Lease lives) and "watch" (everything
else, granted cluster-wide or in each watched namespace).
*/}}
{{- define "portcullis.rules" -}}
{{- $rules := .Files.Get "files/clusterrole-rules.yaml" | fromYamlArray -}}
{{- $lease := list -}}
{{- $watch := list -}}
{{- range $rules -}}
{{- if not (and (kindIs "map" .) (hasKey . "resources")) -}}
{{- fail (printf "files/clusterrole-rules.yaml: every entry must be a PolicyRule with resources, found %v" .) -}}
{{- end -}}
{{- if has "leases" .resources -}}
{{- $lease = append $lease . -}}
{{- else -}}
{{- $watch = append $watch . -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "lease" $lease "watch" $watch) -}}
{{- end -}}
