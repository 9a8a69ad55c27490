{{/*
Certificates for certificates.mode=generate, as JSON: caCert, caKey, caNotAfter,
caBundle, cert, key, notAfter (unix seconds), dnsNames.

Kept across `helm upgrade` with lookup. The CA (long-lived; its bundle is in the webhook
configuration) is reused until it is within renewBeforeDays of expiry; a new CA is then
made and the bundle carries both, so the API server trusts the pods' old and new
certificates while kubelet delivers the new one. The serving certificate is reused until
it is within renewBeforeDays of expiry, its CA changes or its DNS names change, and is
then issued anew under the current CA; the server reloads it without a restart.
`helm template` (no cluster) always makes new ones.
*/}}
{{- define "blastguard.generatedCertificates" -}}
{{- $fullname := include "blastguard.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $g := .Values.certificates.generate }}
{{- $renewBefore := mul (int64 $g.renewBeforeDays) 86400 }}
{{- $dnsNames := include "blastguard.serviceDNSNames" . | fromJsonArray }}
{{- $now := now | unixEpoch | int64 }}

{{- $stored := lookup "v1" "Secret" $ns (printf "%s-ca" $fullname) | default dict }}
{{- $storedData := $stored.data | default dict }}
{{- $storedAnnotations := ($stored.metadata | default dict).annotations | default dict }}
{{- $caNotAfter := index $storedAnnotations "certs.blastguard.io/not-after" | default "0" | int64 }}
{{- $ca := dict }}
{{- $previousCA := "" }}
{{- if and (index $storedData "tls.crt") (index $storedData "tls.key") (gt (sub $caNotAfter $now) $renewBefore) }}
{{- $ca = buildCustomCert (index $storedData "tls.crt") (index $storedData "tls.key") }}
{{- else }}
{{- if index $storedData "tls.crt" }}
{{- $previousCA = index $storedData "tls.crt" | b64dec }}
{{- end }}
{{- $ca = genCA (printf "%s-ca" $fullname) (int $g.caValidityDays) }}
{{- $caNotAfter = add $now (mul (int64 $g.caValidityDays) 86400) }}
{{- end }}
{{- $caSha := sha256sum $ca.Cert }}

{{- $existing := lookup "v1" "Secret" $ns (printf "%s-tls" $fullname) | default dict }}
{{- $data := $existing.data | default dict }}
{{- $annotations := ($existing.metadata | default dict).annotations | default dict }}
{{- $notAfter := index $annotations "certs.blastguard.io/not-after" | default "0" | int64 }}
{{- $fresh := gt (sub $notAfter $now) $renewBefore }}
{{- $sameCA := eq (index $annotations "certs.blastguard.io/ca-sha256" | default "") $caSha }}
{{- $sameNames := eq (index $annotations "certs.blastguard.io/dns-names" | default "") (join "," $dnsNames) }}
{{- $cert := dict }}
{{- if and (index $data "tls.crt") (index $data "tls.key") $fresh $sameCA $sameNames }}
{{- $cert = dict "Cert" (index $data "tls.crt" | b64dec) "Key" (index $data "tls.key" | b64dec) }}
{{- else }}
{{- $cert = genSignedCert (index $dnsNames 2) nil $dnsNames (int $g.certValidityDays) $ca }}
{{- $notAfter = add $now (mul (int64 $g.certValidityDays) 86400) }}
{{- end }}
{{- $bundle := printf "%s%s" $ca.Cert $previousCA }}
{{- dict "caCert" $ca.Cert "caKey" $ca.Key "caNotAfter" (toString $caNotAfter) "caSha256" $caSha "caBundle" $bundle "cert" $cert.Cert "key" $cert.Key "notAfter" (toString $notAfter) "dnsNames" (join "," $dnsNames) | toJson }}
{{- end }}
