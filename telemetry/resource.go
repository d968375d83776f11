package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// k8sEnv maps resource attributes to the environment variables that carry
// them in a pod (set through the Downward API; the chart sets the first of
// each list). The first non-empty variable wins.
var k8sEnv = []struct {
	key  attribute.Key
	vars []string
}{
	{semconv.K8SPodNameKey, []string{"POD_NAME", "K8S_POD_NAME"}},
	{semconv.K8SNamespaceNameKey, []string{"POD_NAMESPACE", "K8S_NAMESPACE", "K8S_POD_NAMESPACE"}},
	{semconv.K8SPodUIDKey, []string{"POD_UID", "K8S_POD_UID"}},
	{semconv.K8SNodeNameKey, []string{"NODE_NAME", "K8S_NODE_NAME"}},
}

// newResource describes this process: service name and version, host name,
// Kubernetes pod attributes from the environment, the SDK; then
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which win.
func newResource(ctx context.Context, o Options) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(o.ServiceName)}
	if o.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(o.ServiceVersion))
	}
	for _, k := range k8sEnv {
		for _, v := range k.vars {
			if val := o.Getenv(v); val != "" {
				attrs = append(attrs, k.key.String(val))
				break
			}
		}
	}
	return resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
	)
}
