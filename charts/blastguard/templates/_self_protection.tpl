{{/*
Self-protection (docs/design.md#install): the ValidatingAdmissionPolicy that keeps AI
identities away from blastguard's own objects. It is evaluated by the API server, so
it holds while the webhook is down, and it sees what the webhook never does: the
release namespace, webhook configurations and the CRDs. Rendered from the same values
as the policy's identity signals (policy.provenance.users and groups).
*/}}

{{/* One glob (* and ?, whole-string match, as the server's wildmatch) over the CEL
string `.str`, as a CEL expression. The common forms become plain string functions
(readable in `kubectl get vap -o yaml`, and cheap in the API server's CEL cost
budget); any other glob becomes the same anchored RE2 regex the webhook's
matchConditions use, so every glob the policy accepts is translated and none is
silently dropped:
  "*"        -> true
  "a:b"      -> str == "a:b"
  "a:*"      -> str.startsWith("a:")
  "*:b"      -> str.endsWith(":b")
  "*a*"      -> str.contains("a")
  otherwise  -> str.matches("^(?s:...)$")   (a ? anywhere, or * inside)
A glob that is empty matches only the empty string: it is refused, since it can only
be a mistake (values.schema.json refuses it too). */}}
{{- define "blastguard.celGlob" -}}
{{- $g := .glob }}
{{- if eq $g "" }}
{{- fail (printf "policy.provenance: an empty pattern cannot name an identity (in %s)" .where) }}
{{- end }}
{{- $stars := sub (len (splitList "*" $g)) 1 }}
{{- $inner := trimSuffix "*" (trimPrefix "*" $g) }}
{{- if contains "?" $g }}
{{- printf "%s.matches(%s)" .str (include "blastguard.celString" (printf "^(?s:%s)$" (include "blastguard.globRegex" $g))) }}
{{- else if eq $stars 0 }}
{{- printf "%s == %s" .str (include "blastguard.celString" $g) }}
{{- else if and (eq $stars 1) (eq $g "*") }}
{{- "true" }}
{{- else if and (eq $stars 1) (hasSuffix "*" $g) }}
{{- printf "%s.startsWith(%s)" .str (include "blastguard.celString" $inner) }}
{{- else if and (eq $stars 1) (hasPrefix "*" $g) }}
{{- printf "%s.endsWith(%s)" .str (include "blastguard.celString" $inner) }}
{{- else if and (eq $stars 2) (hasPrefix "*" $g) (hasSuffix "*" $g) (ne $inner "") }}
{{- printf "%s.contains(%s)" .str (include "blastguard.celString" $inner) }}
{{- else if eq (trimAll "*" $g) "" }}
{{- /* "**", "***": any string, as "*". */ -}}
{{- "true" }}
{{- else }}
{{- printf "%s.matches(%s)" .str (include "blastguard.celString" (printf "^(?s:%s)$" (include "blastguard.globRegex" $g))) }}
{{- end }}
{{- end }}

{{/* `.str` matches any of `.globs`: the globs' expressions joined by ||. */}}
{{- define "blastguard.celAnyGlobSimple" -}}
{{- $str := .str }}
{{- $where := .where }}
{{- $parts := list }}
{{- range .globs }}
{{- $parts = append $parts (include "blastguard.celGlob" (dict "str" $str "glob" . "where" $where)) }}
{{- end }}
{{- if eq (len $parts) 1 }}
{{- first $parts }}
{{- else }}
{{- printf "(%s)" (join ") || (" $parts) }}
{{- end }}
{{- end }}

{{/* The name of the policy and of its binding. */}}
{{- define "blastguard.selfProtectionName" -}}
{{- printf "%s-self-protection" (include "blastguard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when self-protection is rendered: it is on and the policy names AI
identities (without users or groups there is no identity to keep out). */}}
{{- define "blastguard.selfProtectionRendered" -}}
{{- $p := .Values.policy.provenance }}
{{- if and .Values.selfProtection.enabled (or $p.users $p.groups) }}true{{ end }}
{{- end }}

{{/* The cluster-scoped objects of the release, by (group, resource) -> names: the
webhook configuration, this policy and its binding, the server's ClusterRoles and
their bindings. The CRDs are matched by group (every *.blastguard.io). */}}
{{- define "blastguard.protectedClusterObjects" -}}
{{- $fullname := include "blastguard.fullname" . }}
{{- $vap := include "blastguard.selfProtectionName" . }}
{{- $out := dict }}
{{- $_ := set $out "admissionregistration.k8s.io/validatingwebhookconfigurations" (list $fullname) }}
{{- $_ := set $out "admissionregistration.k8s.io/validatingadmissionpolicies" (list $vap) }}
{{- $_ := set $out "admissionregistration.k8s.io/validatingadmissionpolicybindings" (list $vap) }}
{{- $roles := list (printf "%s-cluster-state" $fullname) (printf "%s-webhook-configuration" $fullname) }}
{{- $_ := set $out "rbac.authorization.k8s.io/clusterroles" $roles }}
{{- $_ := set $out "rbac.authorization.k8s.io/clusterrolebindings" $roles }}
{{- toJson $out }}
{{- end }}
