{{/*
Names. Every resource is named from "auto-agent.fullname": the release name when it contains the
chart name, else "<release>-<chart>"; fullnameOverride wins. The e2e support library mirrors this
rule in e2e/src/helm.rs (fullname), and a test keeps the two in step.
*/}}
{{- define "auto-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "auto-agent.fullname" -}}
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

{{- define "auto-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The sensor's DaemonSet, ServiceAccount, ClusterRole and binding. */}}
{{- define "auto-agent.sensorName" -}}
{{- printf "%s-sensor" (include "auto-agent.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The controller's Deployment, Service, ServiceAccount, ClusterRole, Role and bindings. */}}
{{- define "auto-agent.controllerName" -}}
{{- printf "%s-controller" (include "auto-agent.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "auto-agent.labels" -}}
helm.sh/chart: {{ include "auto-agent.chart" . }}
app.kubernetes.io/name: {{ include "auto-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: auto-agent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "sensor"). */}}
{{- define "auto-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auto-agent.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's resources: (dict "ctx" $ "component" "sensor"). */}}
{{- define "auto-agent.componentLabels" -}}
{{ include "auto-agent.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: (dict "ctx" $ "image" .Values.sensor.image). */}}
{{- define "auto-agent.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the gRPC ingest's certificate, key and CA. */}}
{{- define "auto-agent.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "auto-agent.controllerName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The controller Service's DNS name the sensors dial and the certificate names. */}}
{{- define "auto-agent.controllerHost" -}}
{{- printf "%s.%s.svc" (include "auto-agent.controllerName" .) .Release.Namespace }}
{{- end }}

{{/* The names the controller's certificate carries. */}}
{{- define "auto-agent.tlsDnsNames" -}}
{{- $svc := include "auto-agent.controllerName" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.tls.clusterDomain) | toJson }}
{{- end }}

{{/* The Secret holding the Slack credentials, if any: the existing one, else the chart's when a
webhook URL or bot token is set, else "". */}}
{{- define "auto-agent.slackSecretName" -}}
{{- if .Values.slack.existingSecret }}
{{- .Values.slack.existingSecret }}
{{- else if or .Values.slack.webhookUrl .Values.slack.botToken }}
{{- printf "%s-slack" (include "auto-agent.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "auto-agent.slackSecretKey" -}}
{{- if .Values.slack.existingSecret }}
{{- .Values.slack.existingSecretKey }}
{{- else }}
{{- "webhook-url" }}
{{- end }}
{{- end }}

{{/*
The Secret of one escalation credential: dict "ctx" $ "existing" <existingSecret> "set" <whether
the chart holds the value> "suffix" <name suffix>. The existing Secret wins; "" when neither.
*/}}
{{- define "auto-agent.credentialSecret" -}}
{{- if .existing }}
{{- .existing }}
{{- else if .set }}
{{- printf "%s-%s" (include "auto-agent.fullname" .ctx) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* An env var from a Secret key: dict "name" "secret" "key" and "optional" (a key a user's
Secret may lack). */}}
{{- define "auto-agent.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{- define "auto-agent.llmSecret" -}}
{{- include "auto-agent.credentialSecret" (dict "ctx" . "existing" .Values.llm.existingSecret "set" .Values.llm.apiKey "suffix" "llm") }}
{{- end }}

{{/* The Secret of a forge tracker's token: dict "ctx" $ "name" github|gitlab|gitea. */}}
{{- define "auto-agent.trackerSecret" -}}
{{- $t := index .ctx.Values.tickets .name }}
{{- include "auto-agent.credentialSecret" (dict "ctx" .ctx "existing" $t.existingSecret "set" $t.token "suffix" .name) }}
{{- end }}

{{- define "auto-agent.jiraSecret" -}}
{{- $j := .Values.tickets.jira }}
{{- include "auto-agent.credentialSecret" (dict "ctx" . "existing" $j.existingSecret "set" (or $j.apiToken $j.email) "suffix" "jira") }}
{{- end }}

{{/* "true" when a route that keeps a thread or an issue per incident key is configured (a Slack
bot token or a ticket tracker): only then do the escalation record settings render. */}}
{{- define "auto-agent.escalationRecords" -}}
{{- $t := .Values.tickets }}
{{- if or .Values.slack.botToken .Values.slack.existingSecret (include "auto-agent.trackerSecret" (dict "ctx" . "name" "github")) (include "auto-agent.trackerSecret" (dict "ctx" . "name" "gitlab")) (include "auto-agent.trackerSecret" (dict "ctx" . "name" "gitea")) $t.jira.url }}
{{- "true" }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount token for the Kubernetes API, projected explicitly (automountServiceAccountToken
is false on both pods): the same three sources the kubelet's automount would project, with an
explicit expiry. kube-rs re-reads the rotated token file.
*/}}
{{- define "auto-agent.kubeApiAccessVolume" -}}
- name: kube-api-access
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3600
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end }}

{{- define "auto-agent.kubeApiAccessMount" -}}
- name: kube-api-access
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}

{{/* Fails rendering on contradictory values the schema cannot express. */}}
{{- define "auto-agent.validate" -}}
{{- if and .Values.tls.existingSecret .Values.tls.certManager.enabled }}
{{- fail "tls.existingSecret and tls.certManager.enabled are exclusive: choose one certificate source" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.issuerRef.name is required when tls.certManager.enabled is true" }}
{{- end }}
{{- if and .Values.evidence.s3.sseKmsKeyId (ne .Values.evidence.s3.sse "aws:kms") }}
{{- fail "evidence.s3.sseKmsKeyId needs evidence.s3.sse: aws:kms" }}
{{- end }}
{{- if and (eq (include "auto-agent.logsStore" .) "s3") (not (include "auto-agent.bundleS3Bucket" .)) }}
{{- fail "logs.store s3 needs a bucket: set evidence.s3.bucket (or the seed's logs.s3.bucket)" }}
{{- end }}
{{- $budgeted := dict }}
{{- range .Values.budgets.cluster }}
{{- if hasKey $budgeted .action }}
{{- fail (printf "budgets.cluster names %s twice: one entry per action" .action) }}
{{- end }}
{{- $_ := set $budgeted .action true }}
{{- end }}
{{- if .Values.llm.enabled }}
{{- if not .Values.llm.baseUrl }}
{{- fail "llm.baseUrl is required when llm.enabled is true" }}
{{- end }}
{{- if not .Values.llm.model }}
{{- fail "llm.model is required when llm.enabled is true" }}
{{- end }}
{{- end }}
{{- $t := .Values.tickets }}
{{- if and (include "auto-agent.trackerSecret" (dict "ctx" . "name" "gitea")) (not $t.gitea.apiUrl) }}
{{- fail "tickets.gitea.apiUrl is required with a Gitea token (Gitea is self-hosted: e.g. https://gitea.example.com/api/v1)" }}
{{- end }}
{{- if and (include "auto-agent.jiraSecret" .) (not $t.jira.url) }}
{{- fail "tickets.jira.url is required with Jira credentials" }}
{{- end }}
{{- if and $t.jira.url (not $t.jira.existingSecret) (not $t.jira.apiToken) }}
{{- fail "tickets.jira.url needs credentials: set tickets.jira.apiToken (and email for Cloud) or tickets.jira.existingSecret" }}
{{- end }}
{{- if and $t.jira.url (eq $t.jira.flavor "cloud") (not $t.jira.existingSecret) (not $t.jira.email) }}
{{- fail "tickets.jira.email is required for Jira Cloud (its API token authenticates with the account email)" }}
{{- end }}
{{- if lt (int .Values.auth.tokenExpirationSeconds) 600 }}
{{- fail "auth.tokenExpirationSeconds must be at least 600 (the API server's minimum)" }}
{{- end }}
{{- /* JSON schema compares a value with constants only; these compare two values. */}}
{{- $c := .Values.controller }}
{{- if le (int64 $c.leaseSeconds) (add (int64 $c.renewSeconds) (int64 $c.fenceMarginSeconds)) }}
{{- fail (printf "controller.leaseSeconds (%d) must be greater than controller.renewSeconds (%d) + controller.fenceMarginSeconds (%d): a leader stops writing fenceMarginSeconds before its lease runs out, so it must renew before that" (int64 $c.leaseSeconds) (int64 $c.renewSeconds) (int64 $c.fenceMarginSeconds)) }}
{{- end }}
{{- $logTailMargin := 16384 }}
{{- if gt (add (int64 .Values.sensor.logTailBytes) $logTailMargin) (int64 $c.maxMessageBytes) }}
{{- fail (printf "sensor.logTailBytes (%d) must stay at least %d bytes below controller.maxMessageBytes (%d), the controller's gRPC message limit: a finding carries its log tail plus names, reason and message, and a larger one is refused" (int64 .Values.sensor.logTailBytes) $logTailMargin (int64 $c.maxMessageBytes)) }}
{{- end }}
{{- end }}

{{/* The action ledger ConfigMap (AUTO_AGENT_LEDGER_NAME). */}}
{{- define "auto-agent.ledgerName" -}}
{{- printf "%s-ledger" (include "auto-agent.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The enabled action features, comma-separated, for AUTO_AGENT_FEATURES.
*/}}
{{- define "auto-agent.enabledFeatures" -}}
{{- $on := list -}}
{{- range $name := list "restart" "memoryBump" "mirrorImage" "nodeRemediation" "scaling" -}}
{{- if index $.Values.features $name -}}
{{- $on = append $on $name -}}
{{- end -}}
{{- end -}}
{{- join "," $on -}}
{{- end -}}

{{/*
The seed chart's evidence settings (logs.store, logs.s3.bucket, logs.s3.prefix) are aliases of
evidence.*; evidence.* wins where both are set. "auto-agent.bundleS3Bucket" and
"auto-agent.bundleS3Prefix" are the values the controller gets.
*/}}
{{- define "auto-agent.logsStore" -}}
{{- (.Values.logs | default dict).store | default "" -}}
{{- end -}}

{{- define "auto-agent.logsS3" -}}
{{- ((.Values.logs | default dict).s3 | default dict) | toJson -}}
{{- end -}}

{{- define "auto-agent.bundleS3Bucket" -}}
{{- $seed := include "auto-agent.logsS3" . | fromJson -}}
{{- $store := include "auto-agent.logsStore" . -}}
{{- if .Values.evidence.s3.bucket -}}
{{- .Values.evidence.s3.bucket -}}
{{- else if not (has $store (list "efs" "filesystem")) -}}
{{- $seed.bucket | default "" -}}
{{- end -}}
{{- end -}}

{{- define "auto-agent.bundleS3Prefix" -}}
{{- $seed := include "auto-agent.logsS3" . | fromJson -}}
{{- .Values.evidence.s3.prefix | default ($seed.prefix | default "") -}}
{{- end -}}

{{/* Whether any of the seed's logs.* values is set (NOTES.txt points to evidence.*). */}}
{{- define "auto-agent.logsUsed" -}}
{{- $seed := include "auto-agent.logsS3" . | fromJson -}}
{{- if or (include "auto-agent.logsStore" .) $seed.bucket $seed.prefix -}}
true
{{- end -}}
{{- end -}}

{{/* budgets.cluster as AUTO_AGENT_CLUSTER_BUDGETS: "Action=max/windowSeconds,...". */}}
{{- define "auto-agent.clusterBudgets" -}}
{{- $out := list -}}
{{- range .Values.budgets.cluster -}}
{{- $out = append $out (printf "%s=%d/%d" .action (int64 .max) (int64 .windowSeconds)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* NetworkPolicy pieces (templates/networkpolicy.yaml), each given its networkPolicy.* value. */}}
{{- define "auto-agent.networkPolicy.apiServer" -}}
# The Kubernetes API. NetworkPolicy cannot select the API server: traffic to the kubernetes Service
# is matched after it is translated to the control plane's addresses (networkPolicy.apiServer).
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- define "auto-agent.networkPolicy.dns" -}}
# DNS (the Service names of the controller, S3, Prometheus, ...).
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    {{- range .ports }}
    - protocol: UDP
      port: {{ . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
