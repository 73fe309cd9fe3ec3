//! `k8s/kserve/inferenceservice.yaml` checked against the code, as `tests/k8s_manifests.rs`
//! checks the plain manifests. k8s-openapi has no KServe types, so the InferenceService is
//! read as YAML: the fields KServe itself defines are checked by name, and everything the
//! predictor shares with a Pod must parse into the real `PodSpec` with no field lost (a
//! misspelt `readinesProbe` would otherwise pass). Then: the container port is the one the
//! server listens on with this environment, the probe paths are served and stay open under
//! `--api-key`, every variable is one the binary reads with a value it accepts, and the
//! settings match k8s/base/deployment.yaml and k8s/base/configmap.yaml.
//! The KEDA variant, `k8s/keda/kserve/` rendered by `kubectl kustomize`, is the same
//! InferenceService with KServe's `autoScaling` (checked against KServe's field names) on the
//! queue gauges the server exports, with the plain deployment's bounds and per-pod target.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::client::Scrape;
use common::k8s::{
    deployment_pods, env_names, kustomize, of_kind, typed, Matcher, Selectors, QUEUE_GAUGES,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_yaml::Value;

/// Fields of KServe's `ComponentExtensionSpec` (serving.kserve.io/v1beta1), which a predictor
/// has besides its inline `PodSpec`.
const EXTENSION_FIELDS: [&str; 14] = [
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "autoScaling",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
];

/// The container KServe looks for in a custom predictor.
const CONTAINER: &str = "kserve-container";

fn yaml(path: &str) -> Value {
    let p = common::repo().join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_yaml::from_str(&text).expect("valid YAML")
}

struct Isvc {
    raw: Value,
    /// The predictor without KServe's own fields.
    pod: PodSpec,
    /// KServe's fields of the predictor.
    extension: BTreeMap<String, Value>,
}

fn isvc() -> Isvc {
    isvc_from(yaml("k8s/kserve/inferenceservice.yaml"))
}

/// [`isvc`]'s reading of an InferenceService already read (or rendered).
fn isvc_from(raw: Value) -> Isvc {
    assert_eq!(raw["apiVersion"], "serving.kserve.io/v1beta1");
    assert_eq!(raw["kind"], "InferenceService");
    let spec = raw["spec"].as_mapping().expect("spec");
    let keys: Vec<&str> = spec.keys().filter_map(Value::as_str).collect();
    assert_eq!(keys, ["predictor"], "only a predictor");
    let mut pod = raw["spec"]["predictor"].as_mapping().unwrap().clone();
    let mut extension = BTreeMap::new();
    for f in EXTENSION_FIELDS {
        if let Some(v) = pod.remove(f) {
            extension.insert(f.to_string(), v);
        }
    }
    let pod: PodSpec = typed("spec.predictor (as a PodSpec)", &Value::Mapping(pod));
    Isvc {
        raw,
        pod,
        extension,
    }
}

fn container(i: &Isvc) -> &Container {
    assert_eq!(i.pod.containers.len(), 1, "one container");
    let c = &i.pod.containers[0];
    assert_eq!(
        c.name, CONTAINER,
        "KServe runs the container named {CONTAINER}"
    );
    c
}

/// The container's literal environment.
fn env_values(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect()
}

#[test]
fn it_is_a_raw_deployment_with_a_kserve_container() {
    let i = isvc();
    let ann = &i.raw["metadata"]["annotations"];
    assert_eq!(ann["serving.kserve.io/deploymentMode"], "RawDeployment");
    assert_eq!(ann["serving.kserve.io/autoscalerClass"], "hpa");
    let c = container(&i);
    assert_eq!(c.args.as_deref(), Some(&["serve".to_string()][..]));
    assert!(c
        .image
        .as_deref()
        .is_some_and(|im| im.starts_with("segserve")));
    // Scaling as k8s/base/hpa.yaml: CPU, 2 to 10 pods.
    let hpa = yaml("k8s/base/hpa.yaml");
    assert_eq!(i.extension["minReplicas"], hpa["spec"]["minReplicas"]);
    assert_eq!(i.extension["maxReplicas"], hpa["spec"]["maxReplicas"]);
    assert_eq!(i.extension["scaleMetric"], "cpu");
    assert_eq!(
        i.extension["scaleTarget"],
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    );
}

#[test]
fn the_port_is_where_the_server_listens() {
    let i = isvc();
    let c = container(&i);
    let ports = c.ports.as_deref().unwrap();
    // KServe's Service targets the first port; Knative allows only one. Its name says it
    // speaks HTTP/2 without TLS, so KServe carries gRPC to it (HTTP/1.1 works there too).
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("h2c"));
    // No port setting in the manifest: the server's default, which is also what Knative's
    // PORT will say (it sets PORT to this containerPort).
    let env = env_values(c);
    assert!(!env.contains_key("PORT"), "Knative refuses a user-set PORT");
    let listens = common::serve_args_from_env(&env).port;
    let want = if env.contains_key("SEGSERVE_PORT") {
        listens
    } else {
        segserve::cli::DEFAULT_PORT
    };
    assert_eq!(ports[0].container_port, i32::from(want));
    let annotations = &i.extension["annotations"];
    assert_eq!(annotations["prometheus.io/port"], want.to_string().as_str());
}

#[test]
fn env_vars_are_ones_the_binary_reads_and_match_the_configmap() {
    let i = isvc();
    let c = container(&i);
    let known = env_names();
    for e in c.env.iter().flatten() {
        assert!(
            known.contains(&e.name),
            "{} is not read by segserve",
            e.name
        );
    }
    let env = env_values(c);
    let a = common::serve_args_from_env(&env);
    assert_eq!(a.log_format, segserve::cli::LogFormat::Json);
    // The same settings as the plain deployment's ConfigMap.
    let config: ConfigMap = typed("k8s/base/configmap.yaml", &yaml("k8s/base/configmap.yaml"));
    for (k, v) in config.data.unwrap() {
        assert_eq!(
            env.get(&k),
            Some(&v),
            "{k} differs from k8s/base/configmap.yaml"
        );
    }
    // Sessions follow this container's CPU limit.
    let sessions = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SEGSERVE_SESSIONS")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.resource_field_ref.as_ref())
        .expect("SEGSERVE_SESSIONS from a resourceFieldRef");
    assert_eq!(sessions.resource, "limits.cpu");
    assert_eq!(sessions.container_name.as_deref(), Some(CONTAINER));
    // Resources, security and grace period as the Deployment's.
    let d: Deployment = serde_yaml::from_value(yaml("k8s/base/deployment.yaml")).unwrap();
    let dpod = d.spec.template.spec.unwrap();
    let dc = &dpod.containers[0];
    // Every variable the Deployment takes from its container's resources, this one takes
    // from its own (SEGSERVE_SESSIONS from the CPU limit, the memory limit, ...).
    for de in dc.env.iter().flatten() {
        let Some(want) = de
            .value_from
            .as_ref()
            .and_then(|v| v.resource_field_ref.as_ref())
        else {
            continue;
        };
        let got = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == de.name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.resource_field_ref.as_ref())
            .unwrap_or_else(|| panic!("{} is not taken from the container's resources", de.name));
        assert_eq!(
            (&got.resource, &got.divisor, got.container_name.as_deref()),
            (&want.resource, &want.divisor, Some(CONTAINER)),
            "{}",
            de.name
        );
    }
    assert_eq!(c.resources, dc.resources);
    assert_eq!(c.security_context, dc.security_context);
    assert_eq!(i.pod.security_context, dpod.security_context);
    assert_eq!(c.volume_mounts, dc.volume_mounts);
    assert_eq!(i.pod.volumes, dpod.volumes);
    let grace_ms = i.pod.termination_grace_period_seconds.expect("set") * 1000;
    assert!(grace_ms > (a.shutdown_drain_ms + a.shutdown_timeout_ms) as i64);
}

fn probe_path<'a>(p: Option<&'a Probe>, port_name: &str, which: &str) -> &'a str {
    let get = p
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("{which} is an httpGet probe"));
    assert_eq!(
        get.port,
        IntOrString::String(port_name.to_string()),
        "{which} port"
    );
    get.path.as_deref().expect("probe path")
}

#[tokio::test]
async fn probes_use_the_protocol_health_routes_and_need_no_key() {
    let i = isvc();
    let c = container(&i);
    let port = c.ports.as_ref().unwrap()[0].name.clone().unwrap();
    let probes = [
        (
            "startupProbe",
            probe_path(c.startup_probe.as_ref(), &port, "startupProbe"),
        ),
        (
            "readinessProbe",
            probe_path(c.readiness_probe.as_ref(), &port, "readinessProbe"),
        ),
        (
            "livenessProbe",
            probe_path(c.liveness_probe.as_ref(), &port, "livenessProbe"),
        ),
    ];
    assert_eq!(probes[0].1, "/v2/health/ready");
    assert_eq!(probes[1].1, "/v2/health/ready");
    assert_eq!(probes[2].1, "/v2/health/live");
    // Served, and open without the key on a server that requires one (kubelet sends none).
    let server = common::spawn_server(&["--sessions", "1", "--api-key", "s3cret"]).await;
    let client = reqwest::Client::new();
    for (which, path) in probes {
        let status = client.get(server.url(path)).send().await.unwrap().status();
        assert_eq!(status, 200, "{which} {path}");
    }
    // While the key still guards the protocol itself.
    let status = client.get(server.url("/v2")).send().await.unwrap().status();
    assert_eq!(status, 401);
}

/// `spec.predictor.autoScaling` as KServe 0.20 spells it (`AutoScalingSpec`, `MetricsSpec`,
/// `ExternalMetricSource`, `ExternalMetrics`, `MetricTarget` in
/// `pkg/apis/serving/v1beta1/component.go`). No Rust type exists for KServe's API, so these
/// refuse any other field, as `typed` does for the pod's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // every field KServe defines is declared, so none is refused; not all are read
struct AutoScaling {
    metrics: Option<Vec<MetricsSpec>>,
    /// The HPA's own `behavior`, checked through k8s-openapi's type by [`typed`].
    behavior: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct MetricsSpec {
    #[serde(rename = "type")]
    type_: String,
    resource: Option<Value>,
    external: Option<ExternalMetricSource>,
    #[serde(rename = "podmetric")]
    pod_metric: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ExternalMetricSource {
    metric: ExternalMetrics,
    authentication_ref: Option<Value>,
    target: MetricTarget,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ExternalMetrics {
    backend: String,
    server_address: Option<String>,
    query: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct MetricTarget {
    #[serde(rename = "type")]
    type_: Option<String>,
    /// Quantities, written as strings as KServe's examples do.
    value: Option<String>,
    average_value: Option<String>,
    average_utilization: Option<i32>,
}

#[tokio::test]
async fn keda_variant_scales_the_predictor_on_its_queue_and_changes_nothing_else() {
    // k8s/kserve/ applies the InferenceService alone, so that an overlay can build on it.
    let k = yaml("k8s/kserve/kustomization.yaml");
    assert_eq!(k["resources"], Value::from(vec!["inferenceservice.yaml"]));
    let objects = kustomize(&common::repo().join("k8s").join("keda").join("kserve"));
    assert_eq!(
        objects.len(),
        1,
        "the InferenceService alone: KServe makes the ScaledObject from it"
    );
    let i = isvc_from(objects[0].clone());
    let ann = &i.raw["metadata"]["annotations"];
    assert_eq!(
        ann["serving.kserve.io/deploymentMode"], "RawDeployment",
        "KServe scales with KEDA in raw deployment mode only"
    );
    assert_eq!(ann["serving.kserve.io/autoscalerClass"], "keda");
    for f in ["scaleMetric", "scaleTarget"] {
        assert!(
            !i.extension.contains_key(f),
            "KServe refuses {f} under KEDA"
        );
    }
    // The bounds and scale-down pace of k8s/base/hpa.yaml, which KServe hands to the
    // ScaledObject (of `behavior`, only the stabilization windows).
    let hpa = yaml("k8s/base/hpa.yaml");
    assert_eq!(i.extension["minReplicas"], hpa["spec"]["minReplicas"]);
    assert_eq!(i.extension["maxReplicas"], hpa["spec"]["maxReplicas"]);
    let a: AutoScaling = serde_yaml::from_value(i.extension["autoScaling"].clone())
        .unwrap_or_else(|e| panic!("autoScaling as KServe 0.20 spells it: {e}"));
    let behavior = a.behavior.expect("autoScaling.behavior");
    typed::<HorizontalPodAutoscalerBehavior>("autoScaling.behavior", &behavior);
    assert_eq!(behavior, hpa["spec"]["behavior"]);

    let [metric] = &a.metrics.unwrap_or_default()[..] else {
        panic!("one metric")
    };
    assert_eq!(metric.type_, "External");
    let external = metric.external.as_ref().expect("external");
    assert_eq!(external.metric.backend, "prometheus");
    // KServe copies `value` into the trigger's threshold and leaves the metric type at KEDA's
    // AverageValue; its validation wants `value` with type Value. Per pod, as k8s/keda/.
    assert_eq!(external.target.type_.as_deref(), Some("Value"));
    let plain = kustomize(&common::repo().join("k8s").join("keda"));
    let [so] = of_kind(&plain, "ScaledObject")[..] else {
        panic!("one ScaledObject in k8s/keda/")
    };
    assert_eq!(
        external.target.value.as_deref(),
        so["spec"]["triggers"][0]["metadata"]["threshold"].as_str(),
        "the per-pod target of k8s/keda/"
    );
    let query = external.metric.query.as_deref().expect("a query");
    assert!(
        query.starts_with("sum("),
        "one value: KEDA refuses a query that returns several"
    );
    let s = Selectors::parse(query);
    assert_eq!(s.metrics, BTreeSet::from(QUEUE_GAUGES.map(String::from)));
    // KServe's raw Deployment is <name>-predictor.
    let name = i.raw["metadata"]["name"].as_str().unwrap();
    let ns = i.raw["metadata"]["namespace"]
        .as_str()
        .expect("the overlay names its namespace");
    assert_eq!(
        s.matchers,
        [
            Matcher::new("namespace", "=", ns),
            Matcher::new("pod", "=~", &deployment_pods(&format!("{name}-predictor")))
        ],
        "the query counts the predictor's pods in this namespace"
    );

    // Everything else is k8s/kserve/inferenceservice.yaml as it is.
    let mut back = i.raw.clone();
    let meta = back["metadata"].as_mapping_mut().unwrap();
    meta.remove("namespace");
    meta["annotations"]["serving.kserve.io/autoscalerClass"] = "hpa".into();
    let predictor = back["spec"]["predictor"].as_mapping_mut().unwrap();
    predictor.remove("autoScaling");
    let plain_isvc = isvc();
    for f in ["scaleMetric", "scaleTarget"] {
        predictor.insert(f.into(), plain_isvc.extension[f].clone());
    }
    assert_eq!(
        back, plain_isvc.raw,
        "k8s/keda/kserve changes only the autoscaler"
    );

    // The gauges are on the port Prometheus scrapes, as the InferenceService runs the server.
    let c = container(&i);
    let port = c.ports.as_ref().unwrap()[0].container_port;
    let annotations = &i.extension["annotations"];
    assert_eq!(annotations["prometheus.io/port"], port.to_string().as_str());
    let path = annotations["prometheus.io/path"].as_str().unwrap();
    // The release binary, in a process of its own: the metrics registry is process-wide.
    let model = common::model("yolov8n-seg-320").display().to_string();
    let server = common::Binary::start(None, &["--model".into(), model], |_| {});
    server.wait_ready().await;
    let text = reqwest::get(server.url(path))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = Scrape::parse(&text);
    for name in &s.metrics {
        assert_eq!(
            scrape.kind(name),
            Some("gauge"),
            "{name}: not a gauge the server exports"
        );
        assert!(!scrape.series(name).is_empty(), "no {name} series");
    }
}
