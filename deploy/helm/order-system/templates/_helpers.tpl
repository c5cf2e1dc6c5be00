{{/*
Shared definitions: names, labels, the Kafka and Postgres each component
talks to, the topics, and the checks on values that cannot work.
*/}}

{{/* The name of a component's objects: `<release>-<component>`. */}}
{{- define "order-system.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "order-system.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "order-system.labels" -}}
{{ include "order-system.selectorLabels" . }}
app.kubernetes.io/part-of: order-system
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The topic table (files/topic-table.yaml), parsed. */}}
{{- define "order-system.topicTable" -}}
{{- .Files.Get "files/topic-table.yaml" -}}
{{- end -}}

{{/* Every topic and dead-letter topic, by its configured name, as a JSON list. */}}
{{- define "order-system.allTopics" -}}
{{- $table := include "order-system.topicTable" . | fromYaml -}}
{{- $topics := list -}}
{{- range $table.topics }}{{ $topics = append $topics (index $.Values.env .variable) }}{{ end -}}
{{- range $table.topics }}{{ $topics = append $topics (printf "%s%s" (index $.Values.env .variable) $table.deadLetterSuffix) }}{{ end -}}
{{- toJson $topics -}}
{{- end -}}

{{/* The bootstrap servers every Kafka client uses. */}}
{{- define "order-system.kafkaBootstrap" -}}
{{- if .Values.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap:%v" .Values.strimzi.clusterName .Values.strimzi.listenerPort -}}
{{- else -}}
{{- .Values.kafka.external.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{/* KAFKA_SECURITY_PROTOCOL: Strimzi's listener is SCRAM over TLS. */}}
{{- define "order-system.kafkaProtocol" -}}
{{- if .Values.strimzi.enabled }}sasl_ssl{{ else }}{{ .Values.kafka.external.securityProtocol }}{{ end -}}
{{- end -}}

{{- define "order-system.kafkaUsesSasl" -}}
{{- if hasPrefix "sasl_" (include "order-system.kafkaProtocol" .) }}true{{ end -}}
{{- end -}}

{{- define "order-system.kafkaUsesTls" -}}
{{- $protocol := include "order-system.kafkaProtocol" . -}}
{{- if or (eq $protocol "ssl") (eq $protocol "sasl_ssl") }}true{{ end -}}
{{- end -}}

{{/* The Secret with the brokers' CA (`ca.crt`), or nothing for the trust store. */}}
{{- define "order-system.kafkaCaSecret" -}}
{{- if .Values.strimzi.enabled -}}
{{- printf "%s-cluster-ca-cert" .Values.strimzi.clusterName -}}
{{- else if include "order-system.kafkaUsesTls" . -}}
{{- .Values.kafka.external.caSecret -}}
{{- end -}}
{{- end -}}

{{/* Where the CA is mounted, for KAFKA_SSL_CA_LOCATION. */}}
{{- define "order-system.kafkaCaDir" -}}/etc/order-system/kafka-ca{{- end -}}

{{/* The Postgres host: CloudNativePG's read-write service, or the external one. */}}
{{- define "order-system.databaseHost" -}}
{{- if .Values.cloudnativepg.enabled -}}
{{- printf "%s-rw" .Values.cloudnativepg.clusterName -}}
{{- else -}}
{{- .Values.database.external.host -}}
{{- end -}}
{{- end -}}

{{- define "order-system.databasePort" -}}
{{- if .Values.cloudnativepg.enabled }}5432{{ else }}{{ .Values.database.external.port }}{{ end -}}
{{- end -}}

{{/* The pods' grace period: the shutdown allowance plus the headroom to exit. */}}
{{- define "order-system.terminationGracePeriodSeconds" -}}
{{- add (div (int .Values.env.SHUTDOWN_TIMEOUT_MS) 1000) .Values.terminationHeadroomSeconds -}}
{{- end -}}

{{/* Fails the render on values that cannot work. */}}
{{- define "order-system.checks" -}}
{{- $partitions := int .Values.env.KAFKA_TOPIC_PARTITIONS -}}
{{- range $name, $service := .Values.services -}}
{{- if gt (int $service.replicas) $partitions -}}
{{- fail (printf "services.%s.replicas (%v) exceeds KAFKA_TOPIC_PARTITIONS (%v): the extra replicas would get no partition" $name $service.replicas $partitions) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.strimzi.enabled (gt (int .Values.env.KAFKA_REPLICATION_FACTOR) (int .Values.strimzi.nodes)) -}}
{{- fail "env.KAFKA_REPLICATION_FACTOR exceeds strimzi.nodes" -}}
{{- end -}}
{{- if and .Values.strimzi.enabled (ge (int .Values.strimzi.minInsyncReplicas) (int .Values.env.KAFKA_REPLICATION_FACTOR)) -}}
{{- fail "strimzi.minInsyncReplicas must be below KAFKA_REPLICATION_FACTOR, or losing one node stops every write" -}}
{{- end -}}
{{- end -}}

{{/* The pod-level security context every component shares. */}}
{{- define "order-system.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container-level security context every container shares. */}}
{{- define "order-system.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}
