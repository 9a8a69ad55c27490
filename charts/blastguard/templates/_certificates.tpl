{{/*
Certificates for certificates.mode=generate, as JSON: caCert, caKey, cert, key,
notAfter (unix seconds). Kept across `helm upgrade` with lookup: the CA (long-lived,
its bundle is in the webhook configuration) is reused while its Secret exists; the
serving certificate is reused until it is within renewBeforeDays of expiry, its CA
changes or its DNS names change, and is then issued anew under the same CA, so the
server reloads it without the webhook configuration changing. `helm template` (no
cluster) always makes new ones.
*/}}
{{- define "blastguard.generatedCertificates" -}}
{{- $fullname := include "blastguard.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $g := .Values.certificates.generate }}
{{- $dnsNames := include "blastguard.serviceDNSNames" . | fromJsonArray }}
{{- $now := now | unixEpoch | int64 }}

{{- $ca := dict }}
{{- $caData := (lookup "v1" "Secret" $ns (printf "%s-ca" $fullname)).data | default dict }}
{{- if and (index $caData "tls.crt") (index $caData "tls.key") }}
{{- $ca = buildCustomCert (index $caData "tls.crt") (index $caData "tls.key") }}
{{- else }}
{{- $ca = genCA (printf "%s-ca" $fullname) (int $g.caValidityDays) }}
{{- end }}
{{- $caSha := sha256sum $ca.Cert }}

{{- $existing := lookup "v1" "Secret" $ns (printf "%s-tls" $fullname) | default dict }}
{{- $data := $existing.data | default dict }}
{{- $annotations := ($existing.metadata | default dict).annotations | default dict }}
{{- $notAfter := index $annotations "certs.blastguard.io/not-after" | default "0" | int64 }}
{{- $fresh := gt (sub $notAfter $now) (mul (int64 $g.renewBeforeDays) 86400) }}
{{- $sameCA := eq (index $annotations "certs.blastguard.io/ca-sha256" | default "") $caSha }}
{{- $sameNames := eq (index $annotations "certs.blastguard.io/dns-names" | default "") (join "," $dnsNames) }}
{{- $cert := dict }}
{{- if and (index $data "tls.crt") (index $data "tls.key") $fresh $sameCA $sameNames }}
{{- $cert = dict "Cert" (index $data "tls.crt" | b64dec) "Key" (index $data "tls.key" | b64dec) }}
{{- else }}
{{- $cert = genSignedCert (index $dnsNames 2) nil $dnsNames (int $g.certValidityDays) $ca }}
{{- $notAfter = add $now (mul (int64 $g.certValidityDays) 86400) }}
{{- end }}
{{- dict "caCert" $ca.Cert "caKey" $ca.Key "caSha256" $caSha "cert" $cert.Cert "key" $cert.Key "notAfter" (toString $notAfter) "dnsNames" (join "," $dnsNames) | toJson }}
{{- end }}
