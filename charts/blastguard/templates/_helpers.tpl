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

{{/* "true" when the webhook runs in the cluster. With webhook.url it runs elsewhere
(development) and nothing that needs pods is rendered: the API server calls the URL. */}}
{{- define "blastguard.runsPods" -}}
{{- if not .Values.webhook.url }}true{{ end }}
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
new object, then (sticky) on the old object for UPDATE. DELETE and subresources (a
Scale, an Eviction) are judged by identity alone, and so are the cluster's own
controllers, which copy admitted objects' annotations onto what they make. Every
expression must evaluate without error on every request: under failurePolicy Fail an
error rejects the request. So every optional field is read behind has(),
`object`/`oldObject` only where the operation guarantees them, and regexes only over
strings.
*/}}

{{/* A CEL string literal. JSON string syntax is valid CEL string syntax. */}}
{{- define "blastguard.celString" -}}
{{- toJson . }}
{{- end }}

{{/* A glob (only * and ?, no escapes, whole-string match, as the server's wildmatch)
as an RE2 regex. */}}
{{- define "blastguard.globRegex" -}}
{{- regexQuoteMeta . | replace "\\*" ".*" | replace "\\?" "." }}
{{- end }}

{{/* `<str>` matches any of the globs in .globs: a CEL expression. One regex for all of
them, anchored around the alternation, keeps the expression short and its CEL cost to
one match however many globs there are. (?s) lets * and ? match newlines too. */}}
{{- define "blastguard.celAnyGlob" -}}
{{- $parts := list }}
{{- range .globs }}
{{- $parts = append $parts (include "blastguard.globRegex" .) }}
{{- end }}
{{- printf "%s.matches(%s)" .str (include "blastguard.celString" (printf "^(?s:%s)$" (join "|" $parts))) }}
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
{{- $indent := default "    " .indent }}
{{- printf "has(%s.metadata) && has(%s)\n%s&& (%s)" .obj $annotations $indent (join (printf "\n%s  || " $indent) $keys) }}
{{- end }}

{{/* The whole condition: is this request AI-assisted? One expression, because every
matchCondition must hold for a request to be sent. */}}
{{- define "blastguard.aiAssistedExpression" -}}
{{- $p := .Values.policy.provenance }}
{{- $user := "(has(request.userInfo.username) ? request.userInfo.username : \"\")" }}
{{- $signals := list }}
{{- if $p.users }}
{{- $signals = append $signals (list "the requester is an AI identity" (include "blastguard.celAnyGlob" (dict "str" $user "globs" $p.users))) }}
{{- end }}
{{- if $p.groups }}
{{- $signals = append $signals (list "the requester is in an AI group" (printf "has(request.userInfo.groups)\n    && request.userInfo.groups.exists(g, %s)" (include "blastguard.celAnyGlob" (dict "str" "g" "globs" $p.groups)))) }}
{{- end }}
{{- if $p.fieldManagers }}
{{- $signals = append $signals (list "the field manager is an AI tool" (printf "has(request.options) && has(request.options.fieldManager)\n    && (%s)" (include "blastguard.celAnyGlob" (dict "str" "request.options.fieldManager" "globs" $p.fieldManagers)))) }}
{{- end }}
{{- if $p.annotations }}
{{- /* A Scale or an Eviction carries no annotations of the workload: whatever a client
puts on it says nothing about the change. */ -}}
{{- /* Foreign subresources: their object is another kind (a Scale, an Eviction, a
Binding, a TokenRequest), so its annotations are not the object's. Every other
subresource (status, resize, ...) carries the whole object, marker and all: a marker
stripped through /status is still a stripped marker. The engine's list
(review::FOREIGN_SUBRESOURCES) is the same; tests/chart.rs holds them equal. */ -}}
{{- $guards := list "(!has(request.subResource) || !(request.subResource in [\"scale\", \"eviction\", \"binding\", \"token\"]))" }}
{{- with $p.controllers }}
{{- /* A controller's object is the consequence of a change already admitted (the
deployment controller copies a Deployment's markers onto its ReplicaSets); sending it
would let a webhook outage stop a rollout. */ -}}
{{- $guards = append $guards (printf "!(%s)" (include "blastguard.celAnyGlob" (dict "str" $user "globs" .))) }}
{{- end }}
{{- $marked := list (printf "// the new object is marked (DELETE has none)\n      ((request.operation == \"CREATE\" || request.operation == \"UPDATE\")\n        && %s)" (include "blastguard.celMarked" (dict "obj" "object" "keys" $p.annotations "indent" "        "))) }}
{{- if $p.sticky }}
{{- $marked = append $marked (printf "// sticky: the old object was marked; removing the marker does not make a change human\n      || (request.operation == \"UPDATE\"\n        && %s)" (include "blastguard.celMarked" (dict "obj" "oldObject" "keys" $p.annotations "indent" "        "))) }}
{{- end }}
{{- $signals = append $signals (list "an annotation marks it, on the object itself and not from a controller" (printf "%s\n    && (\n      %s\n    )" (join "\n    && " $guards) (join "\n      " $marked))) }}
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

{{/* The plural resource of a custom workload (policy.workloads): `resource`, or the
lowercased kind + "s", as the server names it. */}}
{{- define "blastguard.workloadResource" -}}
{{- default (printf "%ss" (lower .kind)) .resource }}
{{- end }}

{{/* Adds resources to the rule for (group, version, scope, operations), keeping the
order rules were first asked for, so the rendering reads like files/kinds.yaml. */}}
{{- define "blastguard.addRule" -}}
{{- $key := printf "%s|%s|%s|%s" .group .version .scope (join "," .operations) }}
{{- $rules := .state.rules }}
{{- if not (hasKey $rules $key) }}
{{- $_ := set $rules $key (dict "group" .group "version" .version "scope" .scope "operations" .operations "resources" list) }}
{{- $_ := set .state "order" (append .state.order $key) }}
{{- end }}
{{- $rule := get $rules $key }}
{{- range .resources }}
{{- if not (has . $rule.resources) }}
{{- $_ := set $rule "resources" (append $rule.resources .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The webhook's rules. Every namespaced kind and every subresource of one (the
engine judges a `status`, `resize` or `ephemeralcontainers` change like the object,
and a ConfigMap or Service counts toward a change set's namespaces): one rule over
every resource and every subresource, and matchConditions keep everything but
AI-assisted requests away. Then
the cluster-scoped kinds the engine judges (files/kinds.yaml, which the engine
compiles in) with their subresources, and the extra cluster-scoped resources. A kind
missing here is a kind an AI agent changes unjudged; tests/chart.rs holds this to the
engine's list. */}}
{{- define "blastguard.webhookRules" -}}
{{- $all := list "CREATE" "UPDATE" "DELETE" }}
{{- $state := dict "rules" dict "order" list }}
{{- include "blastguard.addRule" (dict "state" $state "group" "*" "version" "*" "scope" "Namespaced" "operations" $all "resources" (list "*/*")) }}
{{- range .Files.Get "files/kinds.yaml" | fromYamlArray }}
{{- if .clusterScoped }}
{{- include "blastguard.addRule" (dict "state" $state "group" .group "version" .version "scope" "Cluster" "operations" $all "resources" (list .resource (printf "%s/*" .resource))) }}
{{- end }}
{{- end }}
{{- range .Values.webhook.extraClusterScopedResources }}
{{- include "blastguard.addRule" (dict "state" $state "group" .apiGroup "version" .apiVersion "scope" "Cluster" "operations" $all "resources" (list .resource)) }}
{{- end }}
{{- range $state.order }}
{{- $r := get $state.rules . }}
- apiGroups: [{{ $r.group | quote }}]
  apiVersions: [{{ $r.version | quote }}]
  operations: [{{ join ", " $r.operations }}]
  resources: [{{ $r.resources | toJson | trimPrefix "[" | trimSuffix "]" }}]
  scope: {{ $r.scope }}
{{- end }}
{{- end }}
