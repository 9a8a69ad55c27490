{{/* Names and labels. */}}

{{- define "blastguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "blastguard.fullname" -}}
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

{{- define "blastguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "blastguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "blastguard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "blastguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: blastguard
{{- end }}

{{- define "blastguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "blastguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "blastguard.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The webhook's name in the ValidatingWebhookConfiguration. */}}
{{- define "blastguard.webhookName" -}}
validate.blastguard.io
{{- end }}

{{/* The DNS names the API server may use for the webhook Service. */}}
{{- define "blastguard.serviceDNSNames" -}}
{{- $svc := include "blastguard.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.certificates.clusterDomain) | toJson }}
{{- end }}

{{/* The Secret holding the serving certificate (tls.crt, tls.key). */}}
{{- define "blastguard.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "secret" }}
{{- required "certificates.secret.name is required when certificates.mode is secret" .Values.certificates.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "blastguard.fullname" .) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding allowed_signers. */}}
{{- define "blastguard.signersConfigMapName" -}}
{{- default (printf "%s-allowed-signers" (include "blastguard.fullname" .)) .Values.allowedSigners.existingConfigMap }}
{{- end }}

{{/* Namespaces the webhook never sees: the release's own (always, so the webhook
can never block its own recovery) and the configured ones. */}}
{{- define "blastguard.excludedNamespaces" -}}
{{- prepend .Values.webhook.excludedNamespaces .Release.Namespace | uniq | toJson }}
{{- end }}

{{/*
CEL. The matchConditions are rendered from policy.provenance, the same values the
server's policy is rendered from, and mirror the server's provenance check
(src/provenance.rs): identity first (user, groups, field manager), then markers on the
new object, then (sticky) on the old object for UPDATE. DELETE and scale are judged by
identity alone. Every expression must evaluate without error on every request: under
failurePolicy Fail an error rejects the request. So every optional field is read behind
has(), `object`/`oldObject` only where the operation guarantees them, and regexes only
over strings.
*/}}

{{/* A CEL string literal. JSON string syntax is valid CEL string syntax. */}}
{{- define "blastguard.celString" -}}
{{- toJson . }}
{{- end }}

{{/* A glob (only * and ?, no escapes, whole-string match, as the server's wildmatch)
as an RE2 regex, quoted as a CEL string. (?s) lets * and ? match newlines too. */}}
{{- define "blastguard.globRegex" -}}
{{- $re := regexQuoteMeta . | replace "\\*" ".*" | replace "\\?" "." }}
{{- include "blastguard.celString" (printf "^(?s:%s)$" $re) }}
{{- end }}

{{/* `<str>` matches any of the globs in .globs: a CEL expression. */}}
{{- define "blastguard.celAnyGlob" -}}
{{- $str := .str }}
{{- $parts := list }}
{{- range .globs }}
{{- $parts = append $parts (printf "%s.matches(%s)" $str (include "blastguard.globRegex" .)) }}
{{- end }}
{{- join " || " $parts }}
{{- end }}

{{/* `<obj>` carries a provenance annotation with a value other than "false": a CEL
expression. The server trims the value and compares case-insensitively; the regex
allows only ASCII blanks and letters around "false", so it never calls "false" a
value the server calls AI. A value over 64 characters counts as a marker without the
regex, which bounds the expression's CEL cost (the API server's budget is per request,
and exceeding it is an error) at the price of sending a few needless requests. */}}
{{- define "blastguard.celMarked" -}}
{{- $annotations := printf "%s.metadata.annotations" .obj }}
{{- $false := include "blastguard.celString" "^[\t\n\v\f\r ]*[fF][aA][lL][sS][eE][\t\n\v\f\r ]*$" }}
{{- $keys := list }}
{{- range .keys }}
{{- $key := include "blastguard.celString" . }}
{{- $value := printf "%s[%s]" $annotations $key }}
{{- $keys = append $keys (printf "(%s in %s && (size(%s) > 64 || !%s.matches(%s)))" $key $annotations $value $value $false) }}
{{- end }}
{{- printf "has(%s.metadata) && has(%s)\n    && (%s)" .obj $annotations (join "\n        || " $keys) }}
{{- end }}

{{/* The whole condition: is this request AI-assisted? One expression, because every
matchCondition must hold for a request to be sent. */}}
{{- define "blastguard.aiAssistedExpression" -}}
{{- $p := .Values.policy.provenance }}
{{- $notScale := "!(has(request.subResource) && request.subResource == \"scale\")" }}
{{- $signals := list }}
{{- if $p.users }}
{{- $user := "(has(request.userInfo.username) ? request.userInfo.username : \"\")" }}
{{- $signals = append $signals (list "the requester is an AI identity" (include "blastguard.celAnyGlob" (dict "str" $user "globs" $p.users))) }}
{{- end }}
{{- if $p.groups }}
{{- $signals = append $signals (list "the requester is in an AI group" (printf "has(request.userInfo.groups)\n    && request.userInfo.groups.exists(g, %s)" (include "blastguard.celAnyGlob" (dict "str" "g" "globs" $p.groups)))) }}
{{- end }}
{{- if $p.fieldManagers }}
{{- $signals = append $signals (list "the field manager is an AI tool" (printf "has(request.options) && has(request.options.fieldManager)\n    && (%s)" (include "blastguard.celAnyGlob" (dict "str" "request.options.fieldManager" "globs" $p.fieldManagers)))) }}
{{- end }}
{{- if $p.annotations }}
{{- $signals = append $signals (list "the new object is marked (DELETE has none; a Scale's annotations are not the workload's)" (printf "%s\n    && (request.operation == \"CREATE\" || request.operation == \"UPDATE\")\n    && %s" $notScale (include "blastguard.celMarked" (dict "obj" "object" "keys" $p.annotations)))) }}
{{- if $p.sticky }}
{{- $signals = append $signals (list "sticky: the old object was marked; removing the marker does not make a change human" (printf "%s\n    && request.operation == \"UPDATE\"\n    && %s" $notScale (include "blastguard.celMarked" (dict "obj" "oldObject" "keys" $p.annotations)))) }}
{{- end }}
{{- end }}
{{- if not $signals }}
{{- /* No signal configured: nothing is AI-assisted, so nothing is sent. */ -}}
false
{{- end }}
{{- range $i, $s := $signals }}
{{- if $i }}{{ "\n" }}{{ end }}
{{- printf "// %s\n%s(%s)" (index $s 0) (ternary "|| " "" (gt $i 0)) (index $s 1) }}
{{- end }}
{{- end }}
