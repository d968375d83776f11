{{/*
Named templates of the tether chart.

Public (stable; your chart may include them, passing tether's own context,
which a parent chart reaches as .Subcharts.tether):
  tether.sidecar                        the tether container as one list item
  tether.sidecarInitContainers          tether.sidecar when sidecar.native is true, else nothing
  tether.sidecarContainers              tether.sidecar when sidecar.native is false, else nothing
  tether.sidecarVolumes                 the volumes tether.sidecar mounts (list items)
  tether.podAnnotations                 checksum/config (a config change rolls the pods)
  tether.terminationGracePeriodSeconds  drain_timeout + margin, or the value you set
  tether.fullname                       the name of tether's ConfigMap and workloads
Everything else here is internal.
*/}}

{{- define "tether.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tether.fullname" -}}
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

{{- define "tether.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tether.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tether.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tether.labels" -}}
helm.sh/chart: {{ include "tether.chart" . }}
{{ include "tether.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: proxy
{{- end }}

{{- define "tether.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tether.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tether.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
tether.durationSeconds: the number of seconds in a Go duration string ("30s",
"1m30s", "500ms", "1h"), as a float. Fails on anything else.
Input: (dict "key" <key path for messages> "value" <duration>).
*/}}
{{- define "tether.durationSeconds" -}}
{{- $d := toString .value }}
{{- $unit := "(ns|us|µs|ms|s|m|h)" }}
{{- $num := "([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" }}
{{- if not (regexMatch (printf "^(0|(%s%s)+)$" $num $unit) $d) }}
{{- fail (printf "%s: %q is not a Go duration such as 30s, 1m30s or 500ms" .key $d) }}
{{- end }}
{{- $scale := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll (printf "%s%s" $num $unit) $d -1 }}
{{- $n := regexFind (printf "^%s" $num) . }}
{{- $u := trimPrefix $n . }}
{{- $total = addf $total (mulf (float64 $n) (get $scale $u)) }}
{{- end }}
{{- $total }}
{{- end }}

{{/* tether.drainSeconds: config.lifecycle.drain_timeout in seconds (tether's default 30s when unset). */}}
{{- define "tether.drainSeconds" -}}
{{- $lc := (.Values.config | default dict).lifecycle | default dict }}
{{- include "tether.durationSeconds" (dict "key" "config.lifecycle.drain_timeout" "value" ($lc.drain_timeout | default "30s")) }}
{{- end }}

{{- define "tether.terminationGracePeriodSeconds" -}}
{{- $drain := include "tether.drainSeconds" . | float64 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- addf $drain .Values.terminationGracePeriodMarginSeconds | ceil | int }}
{{- else }}
{{- $set := .Values.terminationGracePeriodSeconds | int }}
{{- if le (float64 $set) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.lifecycle.drain_timeout (%v s), or the kubelet kills tether before its sessions drain; leave it null to derive it" $set $drain) }}
{{- end }}
{{- $set }}
{{- end }}
{{- end }}

{{/* tether.loopback: "true" when the host of a host:port is a loopback address. */}}
{{- define "tether.loopback" -}}
{{- $host := regexReplaceAll ":[0-9]+$" . "" | trimPrefix "[" | trimSuffix "]" }}
{{- if or (eq $host "localhost") (hasPrefix "127." $host) (eq $host "::1") }}true{{ end }}
{{- end }}

{{/* tether.acmeHTTPPort: the port of config.tls.acme.http_listen in acme mode, else nothing. */}}
{{- define "tether.acmeHTTPPort" -}}
{{- $tls := (.Values.config | default dict).tls | default dict }}
{{- $acme := $tls.acme | default dict }}
{{- if and (eq (toString $tls.mode) "acme") $acme.http_listen }}
{{- include "tether.port" $acme.http_listen }}
{{- end }}
{{- end }}

{{- define "tether.port" -}}
{{- regexFind "[0-9]+$" . }}
{{- end }}

{{/*
tether.configYAML: the tether.yaml the ConfigMap holds: .Values.config as
written, with the keys listed in values.yaml filled in when unset.
*/}}
{{- define "tether.configYAML" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := $cfg.server | default dict }}
{{- if not $server.listen }}
{{- $host := ternary "0.0.0.0" "127.0.0.1" (eq .Values.mode "standalone") }}
{{- $_ := set $server "listen" (printf "%s:%d" $host (int .Values.ports.client)) }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- $admin := $cfg.admin | default dict }}
{{- if not $admin.listen }}
{{- $_ := set $admin "listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) }}
{{- end }}
{{- $_ := set $cfg "admin" $admin }}
{{- if hasKey $cfg "tls" }}
{{- $tls := $cfg.tls | default dict }}
{{- if and (hasKey $tls "mode") (kindIs "bool" $tls.mode) (not $tls.mode) }}
{{- /* YAML 1.1 reads an unquoted off as false. */}}
{{- $_ := set $tls "mode" "off" }}
{{- end }}
{{- if eq (toString $tls.mode) "acme" }}
{{- $acme := $tls.acme | default dict }}
{{- if not $acme.storage_dir }}
{{- $_ := set $acme "storage_dir" .Values.acmeStorage.mountPath }}
{{- end }}
{{- $_ := set $tls "acme" $acme }}
{{- end }}
{{- if and (eq (toString $tls.mode) "files") .Values.tlsSecret.name }}
{{- if not $tls.cert_file }}{{ $_ := set $tls "cert_file" "/etc/tether-tls/tls.crt" }}{{ end }}
{{- if not $tls.key_file }}{{ $_ := set $tls "key_file" "/etc/tether-tls/tls.key" }}{{ end }}
{{- end }}
{{- $_ := set $cfg "tls" $tls }}
{{- end }}
{{- $resume := dig "lifecycle" "resume" dict $cfg }}
{{- if and (kindIs "map" $resume) (hasKey $resume "true") }}
{{- /* YAML 1.1 reads an unquoted on as true. */}}
{{- if hasKey $resume "on" }}
{{- fail "config.lifecycle.resume.on is set twice: quoted and as a bare on (which YAML reads as true); keep one" }}
{{- end }}
{{- $_ := set $resume "on" (get $resume "true") }}
{{- $_ := unset $resume "true" }}
{{- end }}
{{- if .Values.otel.endpoint }}
{{- $tel := $cfg.telemetry | default dict }}
{{- $traces := $tel.traces | default dict }}
{{- if not $traces.exporter }}
{{- $_ := set $traces "exporter" "otlp" }}
{{- end }}
{{- $_ := set $tel "traces" $traces }}
{{- $_ := set $cfg "telemetry" $tel }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
tether.validate: fails on values that cannot work together. Included by every
template that depends on them; renders nothing.
*/}}
{{- define "tether.validate" -}}
{{- $cfg := include "tether.configYAML" . | fromYaml }}
{{- $tls := $cfg.tls | default dict }}
{{- $tlsMode := toString ($tls.mode | default "off") }}
{{- $auth := $cfg.auth | default dict }}
{{- $server := $cfg.server }}
{{- $admin := $cfg.admin }}
{{- $_ := include "tether.terminationGracePeriodSeconds" . }}
{{- if ne (include "tether.port" $server.listen) (toString .Values.ports.client) }}
{{- fail (printf "config.server.listen (%s) must use ports.client (%v): the container port, probes and Service point there" $server.listen .Values.ports.client) }}
{{- end }}
{{- if ne (include "tether.port" $admin.listen) (toString .Values.ports.admin) }}
{{- fail (printf "config.admin.listen (%s) must use ports.admin (%v): the probes and metrics point there" $admin.listen .Values.ports.admin) }}
{{- end }}
{{- if eq (int .Values.ports.client) (int .Values.ports.admin) }}
{{- fail "ports.client and ports.admin must differ" }}
{{- end }}
{{- if include "tether.loopback" $admin.listen }}
{{- fail (printf "config.admin.listen (%s) is a loopback address: kubelet probes cannot reach it; use 0.0.0.0:%v" $admin.listen .Values.ports.admin) }}
{{- end }}
{{- if and (eq .Values.mode "standalone") (include "tether.loopback" $server.listen) }}
{{- fail (printf "mode standalone: config.server.listen (%s) is a loopback address the Service cannot reach; use 0.0.0.0:%v or leave it unset" $server.listen .Values.ports.client) }}
{{- end }}
{{- if eq $tlsMode "acme" }}
{{- if eq .Values.mode "sidecar" }}
{{- fail "config.tls.mode acme needs mode standalone: a sidecar listens on the pod's loopback, which no ACME challenge reaches" }}
{{- end }}
{{- if not .Values.acmeStorage.enabled }}
{{- fail "config.tls.mode acme needs a storage volume for certificates and ACME account keys (the root filesystem is read-only): set acmeStorage.enabled=true" }}
{{- end }}
{{- if not (hasPrefix .Values.acmeStorage.mountPath $tls.acme.storage_dir) }}
{{- fail (printf "config.tls.acme.storage_dir (%s) must be under acmeStorage.mountPath (%s), the only writable volume" $tls.acme.storage_dir .Values.acmeStorage.mountPath) }}
{{- end }}
{{- with include "tether.acmeHTTPPort" . }}
{{- if has (int .) (list (int $.Values.ports.client) (int $.Values.ports.admin)) }}
{{- fail (printf "config.tls.acme.http_listen (%s) must use a port other than ports.client and ports.admin" $tls.acme.http_listen) }}
{{- end }}
{{- if include "tether.loopback" $tls.acme.http_listen }}
{{- fail (printf "config.tls.acme.http_listen (%s) is a loopback address the ACME CA cannot reach" $tls.acme.http_listen) }}
{{- end }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.acmeStorage.existingClaim) (not (has "ReadWriteMany" .Values.acmeStorage.accessModes)) }}
{{- fail (printf "config.tls.mode acme with replicaCount %v needs storage all replicas can mount: set acmeStorage.accessModes to [ReadWriteMany], use an acmeStorage.existingClaim, or replicaCount=1" .Values.replicaCount) }}
{{- end }}
{{- end }}
{{- if and (eq $tlsMode "files") (not .Values.tlsSecret.name) (or (not $tls.cert_file) (not $tls.key_file)) }}
{{- fail "config.tls.mode files needs certificate files: set tlsSecret.name to a kubernetes.io/tls Secret, or set config.tls.cert_file/key_file and mount them with extraVolumes/extraVolumeMounts" }}
{{- end }}
{{- if and (eq (toString $auth.mode) "token") (not $auth.tokens_file) }}
{{- fail "config.auth.mode token needs config.auth.tokens_file (mount the file with extraVolumes/extraVolumeMounts)" }}
{{- end }}
{{- if and (eq (toString $auth.mode) "jwt") (not ($auth.jwt | default dict).hmac_secret_file) }}
{{- fail "config.auth.mode jwt needs config.auth.jwt.hmac_secret_file (mount the file with extraVolumes/extraVolumeMounts)" }}
{{- end }}
{{- if and .Values.upstream.existingSecret $cfg.upstreams }}
{{- $found := false }}
{{- range $cfg.upstreams }}
{{- $env := toString (.api_key_env | default "") }}
{{- if not (or $env .api_key_file .token_file) }}
{{- /* tether's default credential variable of the type */}}
{{- $env = get (dict "openai" "OPENAI_API_KEY" "azure" "AZURE_OPENAI_API_KEY") (toString (.type | default "openai")) }}
{{- end }}
{{- if eq $env $.Values.upstream.envName }}{{ $found = true }}{{ end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "upstream.existingSecret is exposed as $%s, but no entry of config.upstreams has api_key_env: %s" .Values.upstream.envName .Values.upstream.envName) }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- if .Values.metrics.serviceMonitor.enabled }}
{{- fail "metrics.serviceMonitor needs mode standalone (a sidecar has no Service of its own); scrape your app's pods on ports.admin with a PodMonitor instead" }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- fail "podDisruptionBudget needs mode standalone; in sidecar mode your app's chart owns the pods and their budget" }}
{{- end }}
{{- if and .Values.sidecar.native (not (semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version)) }}
{{- fail (printf "sidecar.native needs Kubernetes 1.29 or newer (this cluster: %s); set sidecar.native=false for a classic sidecar" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- if and (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tether.podAnnotations" -}}
checksum/config: {{ include "tether.configYAML" . | sha256sum }}
{{- end }}

{{/*
tether.container: the tether container. Input: (dict "ctx" <tether's context>
"role" "native"|"classic"|"main"). Use tether.sidecar instead.
*/}}
{{- define "tether.container" -}}
{{- $ := .ctx }}
{{- $v := $.Values }}
{{- $role := .role }}
{{- include "tether.validate" $ -}}
- name: {{ $v.sidecar.name }}
  image: {{ include "tether.image" $ }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if eq $role "native" }}
  restartPolicy: Always
  {{- end }}
  args: ["serve", "--config", "/etc/tether/tether.yaml"]
  ports:
    - name: tether-client
      containerPort: {{ $v.ports.client }}
      protocol: TCP
    - name: tether-admin
      containerPort: {{ $v.ports.admin }}
      protocol: TCP
    {{- with include "tether.acmeHTTPPort" $ }}
    - name: tether-acmehttp
      containerPort: {{ . }}
      protocol: TCP
    {{- end }}
  env:
    - name: K8S_POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: K8S_POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- if $v.upstream.existingSecret }}
    - name: {{ $v.upstream.envName }}
      valueFrom:
        secretKeyRef:
          name: {{ $v.upstream.existingSecret }}
          key: {{ $v.upstream.existingSecretKey }}
    {{- end }}
    {{- if $v.otel.endpoint }}
    - name: OTEL_EXPORTER_OTLP_ENDPOINT
      value: {{ $v.otel.endpoint | quote }}
    {{- end }}
    {{- $attrs := list "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_POD_NAMESPACE)" }}
    {{- range $k, $val := $v.otel.resourceAttributes }}
    {{- $attrs = append $attrs (printf "%s=%s" $k $val) }}
    {{- end }}
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: {{ join "," $attrs | quote }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  startupProbe:
    httpGet:
      path: /healthz
      port: tether-admin
    periodSeconds: {{ $v.probes.startup.periodSeconds }}
    timeoutSeconds: {{ $v.probes.startup.timeoutSeconds }}
    failureThreshold: {{ $v.probes.startup.failureThreshold }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: tether-admin
    periodSeconds: {{ $v.probes.readiness.periodSeconds }}
    timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
    failureThreshold: {{ $v.probes.readiness.failureThreshold }}
  {{- if $v.probes.liveness.enabled }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: tether-admin
    periodSeconds: {{ $v.probes.liveness.periodSeconds }}
    timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
    failureThreshold: {{ $v.probes.liveness.failureThreshold }}
  {{- end }}
  volumeMounts:
    - name: tether-config
      mountPath: /etc/tether
      readOnly: true
    {{- if $v.acmeStorage.enabled }}
    - name: tether-acme
      mountPath: {{ $v.acmeStorage.mountPath }}
    {{- end }}
    {{- if $v.tlsSecret.name }}
    - name: tether-tls
      mountPath: /etc/tether-tls
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
tether.sidecar: the tether sidecar container as one list item. Input: tether's
context (in a parent chart: .Subcharts.tether). Put it under initContainers
when sidecar.native is true and under containers otherwise, or use
tether.sidecarInitContainers and tether.sidecarContainers, which do that for you.
*/}}
{{- define "tether.sidecar" -}}
{{- include "tether.container" (dict "ctx" . "role" (ternary "native" "classic" (.Values.sidecar.native | default false))) }}
{{- end }}

{{- define "tether.sidecarInitContainers" -}}
{{- if .Values.sidecar.native }}
{{- include "tether.sidecar" . }}
{{- end }}
{{- end }}

{{- define "tether.sidecarContainers" -}}
{{- if not .Values.sidecar.native }}
{{- include "tether.sidecar" . }}
{{- end }}
{{- end }}

{{- define "tether.sidecarVolumes" -}}
- name: tether-config
  configMap:
    name: {{ include "tether.fullname" . }}
{{- if .Values.acmeStorage.enabled }}
- name: tether-acme
  persistentVolumeClaim:
    claimName: {{ .Values.acmeStorage.existingClaim | default (printf "%s-acme" (include "tether.fullname" .)) }}
{{- end }}
{{- if .Values.tlsSecret.name }}
- name: tether-tls
  secret:
    secretName: {{ .Values.tlsSecret.name }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}
