{{/* The agent container of an Ollama pod: a native sidecar (an initContainer that keeps running) or a
classic second container, by agent.nativeSidecar. */}}
{{- define "llmtune.agentContainer" -}}
- name: agent
  image: {{ include "llmtune.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.agent.nativeSidecar }}
  # a native sidecar: started before Ollama, kept running beside it, stopped after it
  restartPolicy: Always
  {{- end }}
  args: ["agent"]
  env:
    {{- include "llmtune.storeEnv" (list . "agent") | nindent 4 }}
    - name: POD_NAME
      valueFrom:
        fieldRef: {fieldPath: metadata.name}
    - name: POD_IP
      valueFrom:
        fieldRef: {fieldPath: status.podIP}
    # the node is the pod: its name is stable in a StatefulSet, its Ollama is reached at the pod's address
    - name: LLMTUNE_AGENT__NODE
      value: "$(POD_NAME)"
    - name: LLMTUNE_AGENT__OLLAMA_URL
      value: {{ printf "http://$(POD_IP):%v" .Values.ollama.port | quote }}
    - name: LLMTUNE_AGENT__HOST
      value: "0.0.0.0"
    - name: LLMTUNE_AGENT__PORT
      value: {{ .Values.agent.port | quote }}
    - name: LLMTUNE_AGENT__LABELS
      value: {{ include "llmtune.pairs" .Values.agent.labels | quote }}
    - name: LLMTUNE_AGENT__MEMORY_BYTES
      value: {{ .Values.agent.memoryBytes | int64 | quote }}
    - name: LLMTUNE_AGENT__GPU_MEMORY_BYTES
      value: {{ .Values.agent.gpuMemoryBytes | int64 | quote }}
    - name: LLMTUNE_AGENT__MAX_LOADED_MODELS
      value: {{ .Values.agent.maxLoadedModels | int64 | quote }}
    - name: LLMTUNE_AGENT__MAX_PARALLEL
      value: {{ .Values.agent.maxParallel | int64 | quote }}
    # what Ollama's container was started with: the agent reports restart_required while the pool wants otherwise
    - name: LLMTUNE_AGENT__OLLAMA_ENVIRONMENT
      value: {{ include "llmtune.pairs" .Values.ollama.server | quote }}
    # Ollama's models, read-only: the memory a model will take, from its GGUF header (the autoscaler books it)
    - name: LLMTUNE_AGENT__OLLAMA_MODELS_DIR
      value: /models
    - name: HOME
      value: /tmp
    {{- include "llmtune.extraEnv" .Values.agent.env | nindent 4 }}
  ports:
    - name: agent-metrics
      containerPort: {{ .Values.agent.port }}
      protocol: TCP
  # Startup and liveness only: a readiness probe here would take Ollama out of its Service
  # whenever the agent hiccups. Started = registered under its lease with the configuration synced.
  startupProbe:
    httpGet: {path: /healthz, port: agent-metrics}
    periodSeconds: 2
    failureThreshold: 150
  livenessProbe:
    httpGet: {path: /metrics, port: agent-metrics}
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 6
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.agent.resources | nindent 4 }}
  volumeMounts:
    - name: agent-tmp
      mountPath: /tmp
    - name: models
      mountPath: /models
      readOnly: true
    {{- include "llmtune.storeVolumeMount" (list .) | nindent 4 }}
{{- end }}
