// Validate the ServiceMonitor and PrometheusRule objects read as JSON from stdin against the Prometheus
// Operator's CRD schemas (as @kubernetes-models/prometheus-operator compiles them); print one line per
// object, "ok KIND" or "invalid KIND: <errors>", and exit 1 when one is invalid (tests/test_helm_crds.py).
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = { ServiceMonitor, PrometheusRule };
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = false;
for (const object of JSON.parse(input)) {
  const Model = models[object.kind];
  if (!Model) { console.log(`invalid ${object.kind}: not a kind this checks`); failed = true; continue; }
  try {
    new Model(object).validate();
    console.log(`ok ${object.kind}`);
  } catch (error) {
    console.log(`invalid ${object.kind}: ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
