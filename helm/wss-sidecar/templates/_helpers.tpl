{{/* The chart name, or nameOverride. */}}
{{- define "wss-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The object name prefix: release-chart, or just the release when it holds the chart name. */}}
{{- define "wss-sidecar.fullname" -}}
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

{{/* The injector's Deployment, Service and webhook name. */}}
{{- define "wss-sidecar.injector" -}}
{{- printf "%s-injector" (include "wss-sidecar.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the injector's serving certificate. */}}
{{- define "wss-sidecar.tlsSecret" -}}
{{- printf "%s-tls" (include "wss-sidecar.injector" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "wss-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard labels of every object. */}}
{{- define "wss-sidecar.labels" -}}
helm.sh/chart: {{ include "wss-sidecar.chart" . }}
{{ include "wss-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wss-sidecar
{{- end }}

{{/* The labels that select the injector pods. */}}
{{- define "wss-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wss-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end }}

{{/* The ServiceAccount of the injector pods. */}}
{{- define "wss-sidecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wss-sidecar.injector" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository, or repository alone when the registry is empty (list registry
repository values-key); a short name (no registry host: docker.io/library/… to Docker, refused
by CRI-O's short-name mode) fails the render, as containers/image reads a reference
(docker/reference normalize.go splitDockerDomain: a host has a dot or a port, or is localhost). */}}
{{- define "wss-sidecar.imageName" -}}
{{- $registry := trimSuffix "/" (index . 0) }}
{{- $name := index . 1 }}
{{- if $registry }}{{ $name = printf "%s/%s" $registry $name }}{{ end }}
{{- $host := first (splitList "/" $name) }}
{{- if or (not (contains "/" $name)) (not (or (contains "." $host) (contains ":" $host) (eq $host "localhost"))) }}
{{- fail (printf "%s.registry/%s.repository: %q is a short image name; give a registry (e.g. ghcr.io/wss-sidecar)" (index . 2) (index . 2) $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* The injector image. */}}
{{- define "wss-sidecar.image" -}}
{{- $name := include "wss-sidecar.imageName" (list .Values.image.registry .Values.image.repository "image") }}
{{- printf "%s:%s" $name (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The injected sidecar's image: sidecar.image, each part falling back to the injector's, so
that the sidecar is the injector's release (tag: image.tag, then appVersion) by default. */}}
{{- define "wss-sidecar.sidecarImage" -}}
{{- $registry := default .Values.image.registry .Values.sidecar.image.registry }}
{{- $repo := default .Values.image.repository .Values.sidecar.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.sidecar.image.tag }}
{{- printf "%s:%s" (include "wss-sidecar.imageName" (list $registry $repo "sidecar.image")) $tag }}
{{- end }}

{{/* The DNS names of the injector Service, as the API server calls it. */}}
{{- define "wss-sidecar.dnsNames" -}}
{{- $svc := include "wss-sidecar.injector" . -}}
- {{ $svc }}
- {{ $svc }}.{{ .Release.Namespace }}
- {{ $svc }}.{{ .Release.Namespace }}.svc
- {{ $svc }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end }}

{{/* The injector's --sidecar-default list: sidecar.acme.* and sidecar.defaults, sorted. */}}
{{- define "wss-sidecar.sidecarDefaults" -}}
{{- $defaults := list }}
{{- with .Values.sidecar.acme.directory }}{{ $defaults = append $defaults (printf "acme-directory=%s" .) }}{{ end }}
{{- with .Values.sidecar.acme.email }}{{ $defaults = append $defaults (printf "acme-email=%s" .) }}{{ end }}
{{- range $flag, $value := .Values.sidecar.defaults }}
{{- $defaults = append $defaults (printf "%s=%v" $flag $value) }}
{{- end }}
{{- join "," $defaults }}
{{- end }}

{{/* The labels of the RBAC granted to sidecars: the standard ones, with component sidecar. */}}
{{- define "wss-sidecar.sidecarLabels" -}}
helm.sh/chart: {{ include "wss-sidecar.chart" . }}
app.kubernetes.io/name: {{ include "wss-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: sidecar
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wss-sidecar
{{- end }}

{{/* The Role and RoleBinding name for a sidecarAccess entry's ServiceAccount (list $ entry):
fullname-sidecar-serviceAccount; past 63 characters, cut and suffixed with a hash of the
whole name so that two long names stay apart. */}}
{{- define "wss-sidecar.sidecarAccessName" -}}
{{- $name := printf "%s-sidecar-%s" (include "wss-sidecar.fullname" (index . 0)) (index . 1).serviceAccount }}
{{- if le (len $name) 63 }}
{{- $name }}
{{- else }}
{{- printf "%s-%s" ($name | trunc 54 | trimSuffix "-") ($name | sha256sum | trunc 8) }}
{{- end }}
{{- end }}
