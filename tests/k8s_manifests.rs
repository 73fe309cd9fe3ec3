//! The Kubernetes manifests in `k8s/` (and the Dockerfile they run) checked against the code:
//! they parse into the real API types with no unknown fields, the ports are the server's
//! default port, the probe paths answer 200 on a ready server, every environment variable is
//! one the binary reads, and the shutdown timings fit the pod's grace period. The GPU overlay
//! in `k8s/gpu/` is rendered onto them (kustomize's strategic merge, for the parts it uses)
//! and goes through the same checks, plus its own: a GPU per pod, `--device cuda`.
//! The KEDA overlays in `k8s/keda/` are rendered by `kubectl kustomize` itself: each must swap
//! the HPA for one ScaledObject (checked against KEDA's field names) on the Deployment, with
//! the base HPA's bounds, and read queue gauges the probe port really serves.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::client::Scrape;
use common::k8s::{
    deployment_pods, env_names, kustomize, of_kind, typed, Matcher, Selectors, QUEUE_GAUGES,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use segserve::engine::DeviceChoice;
use serde::Deserialize;

/// The CPU deployment's objects (`k8s/` applies them through its kustomization).
fn k8s_dir() -> PathBuf {
    common::repo().join("k8s").join("base")
}

fn gpu_dir() -> PathBuf {
    common::repo().join("k8s").join("gpu")
}

fn read_yaml(path: &std::path::Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses `k8s/<file>` into `T` ([`typed`]: no unknown fields).
fn load<T>(file: &str) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    typed(file, &read_yaml(&k8s_dir().join(file)))
}

struct Manifests {
    deployment: Deployment,
    service: Service,
    hpa: HorizontalPodAutoscaler,
    pdb: PodDisruptionBudget,
    config: ConfigMap,
}

fn manifests() -> Manifests {
    Manifests {
        deployment: load("deployment.yaml"),
        service: load("service.yaml"),
        hpa: load("hpa.yaml"),
        pdb: load("pdb.yaml"),
        config: load("configmap.yaml"),
    }
}

/// The list fields kustomize merges item by item, and each one's merge key (from the
/// Kubernetes API's `patchMergeKey`); every other list in a patch replaces the base's.
const MERGE_KEYS: [(&str, &str); 6] = [
    ("containers", "name"),
    ("initContainers", "name"),
    ("env", "name"),
    ("volumes", "name"),
    ("volumeMounts", "mountPath"),
    ("ports", "containerPort"),
];

/// Strategic merge of `patch` into `base`, as far as our overlay uses it: maps merge key by
/// key (null deletes), merge-keyed lists merge item by item (`$patch: delete` removes one),
/// anything else is replaced. Any other `$` directive fails, so the test cannot silently
/// diverge from kustomize.
fn strategic_merge(base: &mut serde_yaml::Value, patch: &serde_yaml::Value, field: &str) {
    use serde_yaml::Value;
    match (base, patch) {
        (Value::Mapping(b), Value::Mapping(p)) => {
            for (k, pv) in p {
                let key = k.as_str().expect("string keys");
                assert!(
                    !key.starts_with('$'),
                    "patch directive {key} is not supported here"
                );
                match (b.get_mut(k), pv) {
                    (_, Value::Null) => {
                        b.remove(k);
                    }
                    (Some(bv), _) => strategic_merge(bv, pv, key),
                    (None, _) => {
                        b.insert(k.clone(), pv.clone());
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(p)) if MERGE_KEYS.iter().any(|(f, _)| *f == field) => {
            let merge_key = MERGE_KEYS.iter().find(|(f, _)| *f == field).unwrap().1;
            for item in p {
                let id = &item[merge_key];
                assert!(!id.is_null(), "{field} item without its {merge_key}");
                let pos = b.iter().position(|x| &x[merge_key] == id);
                let mut item = item.clone();
                let delete = item
                    .as_mapping_mut()
                    .and_then(|m| m.remove("$patch"))
                    .map(|d| {
                        assert_eq!(d.as_str(), Some("delete"), "only $patch: delete");
                        true
                    })
                    .unwrap_or(false);
                match (pos, delete) {
                    (Some(i), true) => {
                        b.remove(i);
                    }
                    (None, true) => panic!("$patch: delete of a {field} item the base lacks"),
                    (Some(i), false) => strategic_merge(&mut b[i], &item, field),
                    (None, false) => b.push(item),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// `k8s/gpu/` rendered as kustomize renders it: the base's objects, each patch merged into
/// the object of the same kind and name, and the overlay's image tag.
fn gpu_manifests() -> Manifests {
    let k = read_yaml(&gpu_dir().join("kustomization.yaml"));
    let resources: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(resources, ["../base"], "the overlay builds on k8s/base/");
    let base: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let mut objects: BTreeMap<(String, String), (String, serde_yaml::Value)> = BTreeMap::new();
    for file in base["resources"].as_sequence().unwrap() {
        let file = file.as_str().unwrap();
        let v = read_yaml(&k8s_dir().join(file));
        let id = (
            v["kind"].as_str().unwrap().to_string(),
            v["metadata"]["name"].as_str().unwrap().to_string(),
        );
        objects.insert(id, (file.to_string(), v));
    }
    for patch in k["patches"].as_sequence().expect("patches") {
        let file = patch["path"].as_str().expect("patches by path");
        let p = read_yaml(&gpu_dir().join(file));
        let id = (
            p["kind"].as_str().unwrap().to_string(),
            p["metadata"]["name"].as_str().unwrap().to_string(),
        );
        let (_, target) = objects
            .get_mut(&id)
            .unwrap_or_else(|| panic!("{file} patches {id:?}, which k8s/base/ does not have"));
        strategic_merge(target, &p, "");
    }
    // images: the base's image name gets the overlay's tag.
    let [image] = k["images"].as_sequence().unwrap().as_slice() else {
        panic!("one image in k8s/gpu/kustomization.yaml")
    };
    let (name, tag) = (
        image["name"].as_str().unwrap(),
        image["newTag"].as_str().unwrap(),
    );
    let (_, d) = objects
        .get_mut(&("Deployment".to_string(), "segserve".to_string()))
        .unwrap();
    let c = &mut d["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(
        c.as_str(),
        Some(name),
        "images[].name is the Deployment's image"
    );
    *c = serde_yaml::Value::String(format!("{name}:{tag}"));
    let mut take = |kind: &str| {
        let key = objects
            .keys()
            .find(|(k, _)| k == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone();
        let (file, v) = objects.remove(&key).unwrap();
        (format!("{file} + k8s/gpu"), v)
    };
    let (f, v) = take("Deployment");
    let deployment = typed(&f, &v);
    let (f, v) = take("Service");
    let service = typed(&f, &v);
    let (f, v) = take("HorizontalPodAutoscaler");
    let hpa = typed(&f, &v);
    let (f, v) = take("PodDisruptionBudget");
    let pdb = typed(&f, &v);
    let (f, v) = take("ConfigMap");
    let config = typed(&f, &v);
    Manifests {
        deployment,
        service,
        hpa,
        pdb,
        config,
    }
}

/// The CPU manifests and the GPU overlay rendered onto them, for checks both must pass.
fn both() -> [(&'static str, Manifests); 2] {
    [("k8s/", manifests()), ("k8s/gpu/", gpu_manifests())]
}

fn container(d: &Deployment) -> &Container {
    let pod = d.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1, "one container per pod");
    &pod.containers[0]
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    let template = &d.spec.template;
    template.metadata.as_ref().unwrap().labels.clone().unwrap()
}

fn is_subset(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn manifests_parse_and_kustomization_lists_them_all() {
    manifests();
    let k: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<String> = k["resources"]
        .as_sequence()
        .expect("resources list")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml resources vs files in k8s/"
    );
    // `kubectl apply -k k8s/` applies exactly the base, with the image set.
    let top = read_yaml(&common::repo().join("k8s").join("kustomization.yaml"));
    assert_eq!(
        top["resources"],
        serde_yaml::from_str::<serde_yaml::Value>("[base]").unwrap()
    );
    let k = top;
    // The image the kustomization rewrites is the one the Deployment runs.
    let d: Deployment = load("deployment.yaml");
    let image = container(&d).image.clone().unwrap();
    assert!(
        k["images"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|i| i["name"].as_str() == Some(image.as_str())),
        "kustomization images[] does not name the Deployment's image {image}"
    );
}

#[test]
fn selectors_match_the_pods() {
    for (which, m) in both() {
        println!("checking {which}");
        let labels = pod_labels(&m.deployment);
        let spec = &m.deployment.spec;
        let deploy_sel = spec.selector.match_labels.clone().unwrap();
        assert!(is_subset(&deploy_sel, &labels), "Deployment selector");
        let svc_sel = m.service.spec.as_ref().unwrap().selector.clone().unwrap();
        assert!(is_subset(&svc_sel, &labels), "Service selector");
        let pdb_sel = m.pdb.spec.as_ref().unwrap().selector.as_ref().unwrap();
        assert!(
            is_subset(pdb_sel.match_labels.as_ref().unwrap(), &labels),
            "PDB selector"
        );
        let target = &m.hpa.spec.scale_target_ref;
        assert_eq!(
            (target.kind.as_str(), target.name.as_str()),
            ("Deployment", m.deployment.metadata.name.as_deref().unwrap())
        );
    }
}

/// The probe port the Deployment gives the server (`SEGSERVE_PROBE_PORT`).
fn config_probe_port(d: &Deployment) -> i32 {
    container(d)
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SEGSERVE_PROBE_PORT")
        .and_then(|e| e.value.as_deref())
        .expect("SEGSERVE_PROBE_PORT is set")
        .parse()
        .expect("SEGSERVE_PROBE_PORT is a port number")
}

#[test]
fn ports_are_the_servers_default_port_and_the_probe_port() {
    for (which, m) in both() {
        println!("checking {which}");
        let port = i32::from(common::serve_args(&[]).port);
        let c = container(&m.deployment);
        let ports = c.ports.as_ref().unwrap();
        assert_eq!(ports.len(), 2, "the API port and the probe port");
        let http = ports.iter().find(|p| p.name.as_deref() == Some("http"));
        assert_eq!(http.unwrap().container_port, port, "containerPort");
        let probe = ports.iter().find(|p| p.name.as_deref() == Some("probe"));
        assert_eq!(
            probe.expect("a port named probe").container_port,
            config_probe_port(&m.deployment),
            "the probe port is the server's SEGSERVE_PROBE_PORT"
        );
        let svc = m.service.spec.as_ref().unwrap();
        assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
        let svc_ports = svc.ports.as_ref().unwrap();
        assert_eq!(
            svc_ports.len(),
            1,
            "the probe port stays out of the Service"
        );
        let sp = &svc_ports[0];
        assert_eq!(sp.port, 80, "the seed's Service answers on port 80");
        match sp.target_port.as_ref().unwrap() {
            IntOrString::Int(p) => assert_eq!(*p, port, "targetPort"),
            IntOrString::String(name) => assert_eq!(name, "http"),
        }
        // Prometheus scrapes the probe port, where /metrics needs no key.
        let annotations = m
            .deployment
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(
            annotations["prometheus.io/port"],
            config_probe_port(&m.deployment).to_string()
        );
        // The Dockerfile exposes the API port.
        let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
        assert!(
            dockerfile
                .lines()
                .any(|l| l.trim() == format!("EXPOSE {port}")),
            "Dockerfile EXPOSE {port}"
        );
    }
}

#[test]
fn env_vars_are_ones_the_binary_reads_with_values_it_accepts() {
    for (which, m) in both() {
        println!("checking {which}");
        let known = env_names();
        let mut env: BTreeMap<String, String> = m.config.data.clone().unwrap();
        for e in container(&m.deployment).env.as_deref().unwrap_or_default() {
            if let Some(v) = &e.value {
                env.insert(e.name.clone(), v.clone());
            } else {
                assert!(
                    known.contains(&e.name),
                    "{} is not read by segserve",
                    e.name
                );
            }
        }
        for name in env.keys() {
            assert!(
                known.contains(name),
                "{name} is not read by segserve (known: {known:?})"
            );
        }
        let a = common::serve_args_from_env(&env);
        assert_eq!(
            a.log_format,
            segserve::cli::LogFormat::Json,
            "JSON logs in the cluster"
        );
        // The Deployment's envFrom names this ConfigMap.
        let from = container(&m.deployment).env_from.as_ref().unwrap();
        assert!(from
            .iter()
            .any(|f| f.config_map_ref.as_ref().map(|r| r.name.as_str())
                == m.config.metadata.name.as_deref()));
        // So does every SEGSERVE_ variable the Dockerfile sets.
        let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
        for word in dockerfile.split_whitespace() {
            if let Some((name, _)) = word.split_once('=') {
                if name.starts_with("SEGSERVE_") || name.starts_with("ORT_DYLIB") {
                    assert!(
                        known.contains(name),
                        "Dockerfile sets {name}, which segserve does not read"
                    );
                }
            }
        }
    }
}

/// The memory budget is half of SEGSERVE_MEMORY_LIMIT, which must be the container's own
/// memory limit in bytes (what the kernel will OOM-kill at).
#[test]
fn the_memory_budget_follows_the_memory_limit() {
    let m = manifests();
    let c = container(&m.deployment);
    let env = c.env.as_ref().unwrap();
    let limit = env
        .iter()
        .find(|e| e.name == "SEGSERVE_MEMORY_LIMIT")
        .expect("SEGSERVE_MEMORY_LIMIT is set");
    let field = limit
        .value_from
        .as_ref()
        .and_then(|v| v.resource_field_ref.as_ref())
        .expect("SEGSERVE_MEMORY_LIMIT comes from a resourceFieldRef");
    assert_eq!(field.resource, "limits.memory");
    assert_eq!(field.container_name.as_deref(), Some(c.name.as_str()));
    // Bytes, which is what --memory-limit reads without a unit.
    assert_eq!(field.divisor.as_ref().map(|q| q.0.as_str()), Some("1"));
    assert!(
        env.iter().all(|e| e.name != "SEGSERVE_MEMORY_BUDGET"),
        "a fixed budget would not follow the limit"
    );
}

#[test]
fn sessions_follow_the_cpu_limit() {
    let m = manifests();
    let c = container(&m.deployment);
    let sessions = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "SEGSERVE_SESSIONS")
        .expect("SEGSERVE_SESSIONS is set");
    let field = sessions
        .value_from
        .as_ref()
        .and_then(|v| v.resource_field_ref.as_ref())
        .expect("SEGSERVE_SESSIONS comes from a resourceFieldRef");
    assert_eq!(field.resource, "limits.cpu");
    assert_eq!(field.container_name.as_deref(), Some(c.name.as_str()));
    let res = c.resources.as_ref().unwrap();
    let (req, lim) = (res.requests.as_ref().unwrap(), res.limits.as_ref().unwrap());
    for k in ["cpu", "memory"] {
        assert!(
            req.contains_key(k) && lim.contains_key(k),
            "{k} request and limit"
        );
    }
    let cpus = |q: &Quantity| -> f64 {
        q.0.strip_suffix('m')
            .map(|m| m.parse::<f64>().unwrap() / 1000.0)
            .unwrap_or_else(|| q.0.parse().unwrap())
    };
    assert!(cpus(&req["cpu"]) <= cpus(&lim["cpu"]));
    // The shared intra-op pool has a thread per CPU of the limit, so the pod never runs more
    // inference threads than it has CPUs, and the ConfigMap does not override that.
    let threads = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "SEGSERVE_THREADS")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.resource_field_ref.as_ref())
        .expect("SEGSERVE_THREADS comes from a resourceFieldRef");
    assert_eq!(threads.resource, "limits.cpu");
    assert!(!m
        .config
        .data
        .as_ref()
        .unwrap()
        .contains_key("SEGSERVE_THREADS"));
}

#[test]
fn pods_are_locked_down() {
    for (which, m) in both() {
        println!("checking {which}");
        let pod = m.deployment.spec.template.spec.as_ref().unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        // The uid is the image's USER, so runAsNonRoot can be verified.
        let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
        let user = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix("USER "))
            .expect("Dockerfile USER");
        let uid: i64 = user
            .split(':')
            .next()
            .unwrap()
            .trim()
            .parse()
            .expect("numeric USER");
        assert_eq!(psc.run_as_user, Some(uid));
        let sc = container(&m.deployment).security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let drop = sc.capabilities.as_ref().unwrap().drop.clone().unwrap();
        assert_eq!(drop, vec!["ALL".to_string()]);
    }
}

#[test]
fn grace_period_covers_drain_and_shutdown_timeout() {
    for (which, m) in both() {
        println!("checking {which}");
        let a = common::serve_args_from_env(&m.config.data.clone().unwrap());
        let pod = m.deployment.spec.template.spec.as_ref().unwrap();
        let grace_ms = pod
            .termination_grace_period_seconds
            .expect("set explicitly")
            * 1000;
        let needed = (a.shutdown_drain_ms + a.shutdown_timeout_ms) as i64;
        assert!(
            grace_ms > needed,
            "terminationGracePeriodSeconds ({grace_ms} ms) must exceed drain + shutdown timeout ({needed} ms)"
        );
        assert!(
            a.shutdown_drain_ms > 0,
            "a drain delay lets endpoints drop the pod first"
        );
        // Two replicas, and a disruption budget that still lets a node drain proceed.
        let replicas = m.deployment.spec.replicas.unwrap();
        assert_eq!(replicas, 2);
        assert_eq!(m.hpa.spec.min_replicas, Some(replicas));
        match m.pdb.spec.as_ref().unwrap().min_available.as_ref().unwrap() {
            IntOrString::Int(n) => assert!(*n < replicas),
            IntOrString::String(s) => panic!("use an absolute minAvailable, got {s}"),
        }
    }
}

#[tokio::test]
async fn probe_paths_answer_200_on_the_probe_port_of_a_ready_server() {
    let m = manifests();
    let c = container(&m.deployment);
    let probes = [
        ("startupProbe", c.startup_probe.as_ref()),
        ("readinessProbe", c.readiness_probe.as_ref()),
        ("livenessProbe", c.liveness_probe.as_ref()),
    ];
    // The server as the manifests run it, its probe listener on a free port here.
    let probe_port = common::free_port().to_string();
    let server = common::spawn_server(&["--probe-port", &probe_port]).await;
    let client = reqwest::Client::new();
    for (which, probe) in probes {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{which} is an httpGet probe"));
        assert_eq!(
            get.port,
            IntOrString::String("probe".into()),
            "{which} goes to the probe port, outside the main port's connection caps"
        );
        let path = get.path.as_deref().unwrap();
        let url = format!("http://127.0.0.1:{probe_port}{path}");
        let status = client.get(&url).send().await.unwrap().status();
        assert_eq!(status, 200, "{which} {path} on the probe port");
    }
    let metrics = format!("http://127.0.0.1:{probe_port}/metrics");
    let status = client.get(&metrics).send().await.unwrap().status();
    assert_eq!(status, 200, "/metrics on the probe port");
    drop(server);
    // Readiness and startup use /readyz (503 while loading and draining), liveness /healthz
    // (a pod is not restarted merely for draining).
    let path = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        p.unwrap().http_get.as_ref().unwrap().path.clone().unwrap()
    };
    assert_eq!(path(c.readiness_probe.as_ref()), "/readyz");
    assert_eq!(path(c.startup_probe.as_ref()), "/readyz");
    assert_eq!(path(c.liveness_probe.as_ref()), "/healthz");
}

#[test]
fn gpu_overlay_lists_its_patches_and_gives_each_pod_a_gpu() {
    let k = read_yaml(&gpu_dir().join("kustomization.yaml"));
    let listed: BTreeSet<String> = k["patches"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(gpu_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "k8s/gpu/kustomization.yaml patches vs files"
    );

    let m = gpu_manifests();
    let c = container(&m.deployment);
    let res = c.resources.as_ref().unwrap();
    let one = Quantity("1".into());
    let (req, lim) = (res.requests.as_ref().unwrap(), res.limits.as_ref().unwrap());
    assert_eq!(lim.get("nvidia.com/gpu"), Some(&one), "one GPU per pod");
    assert_eq!(
        req.get("nvidia.com/gpu"),
        Some(&one),
        "extended resources need request = limit"
    );
    // Sessions come from the ConfigMap: on a GPU they no longer follow the CPU limit.
    assert!(
        c.env
            .as_deref()
            .unwrap_or_default()
            .iter()
            .all(|e| e.name != "SEGSERVE_SESSIONS"),
        "the Deployment's SEGSERVE_SESSIONS (from limits.cpu) would override the ConfigMap"
    );
    let a = common::serve_args_from_env(&m.config.data.clone().unwrap());
    assert_eq!(
        a.runtime.device,
        DeviceChoice::Cuda,
        "no silent CPU fallback"
    );
    assert_eq!(a.runtime.sessions, Some(2));
    let pod = m.deployment.spec.template.spec.as_ref().unwrap();
    assert!(
        pod.tolerations
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|t| t.key.as_deref() == Some("nvidia.com/gpu")),
        "tolerates the usual GPU node taint"
    );
    // A rollout must not need a spare GPU.
    let ru = m
        .deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .unwrap();
    assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(1)));
    // Probes: the same endpoints as the CPU pods, with more time to start (CUDA, cuDNN).
    let base = manifests();
    let bc = container(&base.deployment);
    for (g, b) in [
        (&c.startup_probe, &bc.startup_probe),
        (&c.readiness_probe, &bc.readiness_probe),
        (&c.liveness_probe, &bc.liveness_probe),
    ] {
        let (g, b) = (g.as_ref().unwrap(), b.as_ref().unwrap());
        assert_eq!(g.http_get, b.http_get);
    }
    let sp = c.startup_probe.as_ref().unwrap();
    assert!(sp.period_seconds.unwrap() * sp.failure_threshold.unwrap() >= 300);
    // The image is the CUDA build of the Dockerfile.
    let image = c.image.as_deref().unwrap();
    assert!(image.ends_with("-cuda"), "{image}");
    let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
    for needle in [
        "ARG DEVICE=cpu",
        "ARG RUNTIME_BASE=",
        "FROM ${RUNTIME_BASE}",
        "ENV SEGSERVE_DEVICE=${DEVICE}",
        "--build-arg RUNTIME_BASE=docker.io/nvidia/cuda:",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle:?}");
    }
    assert!(m.hpa.spec.max_replicas >= m.hpa.spec.min_replicas.unwrap());
}

/// The KEDA overlays, as folders of `k8s/`: the queue read through Prometheus, and read from
/// the pods by KEDA itself.
const KEDA_PROMETHEUS: &str = "keda";
const KEDA_METRICS_API: &str = "keda/metrics-api";

/// KEDA's ScaledObject (keda.sh/v1alpha1), field for field as KEDA 2.20's Go types spell them
/// (`apis/keda/v1alpha1`: `ScaledObjectSpec`, `ScaleTriggers`, ...). k8s-openapi has no type
/// for it, so these refuse any other field: a misspelt `maxReplicaCount` would otherwise pass
/// here and be pruned by the CRD's schema in the cluster, leaving KEDA's default of 100.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // every field KEDA defines is declared, so none is refused; not all are read
struct ScaledObject {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ScaledObjectSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ScaledObjectSpec {
    scale_target_ref: ScaleTarget,
    polling_interval: Option<i32>,
    initial_cooldown_period: Option<i32>,
    cooldown_period: Option<i32>,
    idle_replica_count: Option<i32>,
    min_replica_count: Option<i32>,
    max_replica_count: Option<i32>,
    advanced: Option<AdvancedConfig>,
    triggers: Vec<ScaleTrigger>,
    fallback: Option<Fallback>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ScaleTarget {
    name: String,
    api_version: Option<String>,
    kind: Option<String>,
    env_source_container_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct AdvancedConfig {
    horizontal_pod_autoscaler_config: Option<HpaConfig>,
    restore_to_original_replica_count: Option<bool>,
    scaling_modifiers: Option<ScalingModifiers>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct HpaConfig {
    /// The HPA's own `behavior`, checked through k8s-openapi's type by [`typed`].
    behavior: Option<serde_yaml::Value>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ScalingModifiers {
    formula: Option<String>,
    target: Option<String>,
    activation_target: Option<String>,
    metric_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ScaleTrigger {
    #[serde(rename = "type")]
    type_: String,
    name: Option<String>,
    use_cached_metrics: Option<bool>,
    /// Strings only, as in the CRD (`threshold: 4` unquoted fails to parse here).
    metadata: BTreeMap<String, String>,
    authentication_ref: Option<AuthenticationRef>,
    metric_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct AuthenticationRef {
    name: String,
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Fallback {
    failure_threshold: i32,
    replicas: i32,
    behavior: Option<String>,
}

/// The metadata keys a trigger of this type reads in KEDA 2.20 (the `keda:"name=..."` tags of
/// its scaler, authentication aside). KEDA ignores any other key, so a misspelt one would
/// silently leave its default in force.
fn trigger_keys(trigger_type: &str) -> &'static [&'static str] {
    match trigger_type {
        "prometheus" => &[
            "serverAddress",
            "query",
            "queryParameters",
            "threshold",
            "activationThreshold",
            "namespace",
            "customHeaders",
            "ignoreNullValues",
            "unsafeSsl",
            "awsRegion",
            "timeout",
            "identityOwner",
        ],
        "metrics-api" => &[
            "targetValue",
            "activationTargetValue",
            "url",
            "format",
            "valueLocation",
            "unsafeSsl",
            "aggregateFromKubeServiceEndpoints",
            "aggregationType",
            "timeout",
        ],
        other => panic!("no list of the {other} trigger's metadata keys"),
    }
}

/// `k8s/<dir>` as `kubectl apply -k` would send it.
fn render(dir: &str) -> Vec<serde_yaml::Value> {
    kustomize(&common::repo().join("k8s").join(dir))
}

/// The one object of `kind` in a rendered overlay.
fn only<'a>(objects: &'a [serde_yaml::Value], kind: &str, dir: &str) -> &'a serde_yaml::Value {
    let [o] = of_kind(objects, kind)[..] else {
        panic!("k8s/{dir}: not exactly one {kind}")
    };
    o
}

/// The one ScaledObject of a rendered overlay, every field and trigger key one KEDA knows.
fn scaled_object(objects: &[serde_yaml::Value], dir: &str) -> ScaledObject {
    let raw = only(objects, "ScaledObject", dir);
    assert_eq!(raw["apiVersion"], "keda.sh/v1alpha1", "k8s/{dir}");
    let so: ScaledObject = serde_yaml::from_value(raw.clone())
        .unwrap_or_else(|e| panic!("k8s/{dir}: not a ScaledObject as KEDA spells it: {e}"));
    for t in &so.spec.triggers {
        let known = trigger_keys(&t.type_);
        for key in t.metadata.keys() {
            assert!(
                known.contains(&key.as_str()),
                "k8s/{dir}: the {} trigger has no {key:?} (it reads {known:?})",
                t.type_
            );
        }
    }
    so
}

#[test]
fn selectors_read_metric_names_and_label_matchers() {
    let s = Selectors::parse(
        r#"sum by (model) (a_b{namespace="ns", pod=~"x-[a-z0-9]+"} + rate(c:d[5m])) > 0.5"#,
    );
    assert_eq!(s.metrics, BTreeSet::from(["a_b", "c:d"].map(String::from)));
    let m: Vec<(&str, &str, &str)> = s
        .matchers
        .iter()
        .map(|m| (m.label.as_str(), m.op.as_str(), m.value.as_str()))
        .collect();
    assert_eq!(m, [("namespace", "=", "ns"), ("pod", "=~", "x-[a-z0-9]+")]);
    let bare = Selectors::parse("segserve_compute_busy");
    assert_eq!(
        bare.metrics,
        BTreeSet::from(["segserve_compute_busy".to_string()])
    );
    assert!(bare.matchers.is_empty());
}

#[test]
fn keda_overlays_put_one_scaled_object_in_the_hpas_place_and_change_nothing_else() {
    let base = manifests();
    // What `kubectl apply -k k8s/` sends.
    let plain = render("");
    let key = |o: &serde_yaml::Value| {
        (
            o["kind"].as_str().unwrap().to_string(),
            o["metadata"]["name"].as_str().unwrap().to_string(),
        )
    };
    for dir in [KEDA_PROMETHEUS, KEDA_METRICS_API] {
        println!("checking k8s/{dir}");
        let folder = common::repo().join("k8s").join(dir);
        let k = read_yaml(&folder.join("kustomization.yaml"));
        let listed: BTreeSet<String> = k["resources"]
            .as_sequence()
            .unwrap()
            .iter()
            .chain(k["patches"].as_sequence().into_iter().flatten())
            .filter_map(|r| r.as_str().or(r["path"].as_str()))
            .filter(|f| f.ends_with(".yaml"))
            .map(String::from)
            .collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
            .collect();
        assert_eq!(listed, on_disk, "k8s/{dir}/kustomization.yaml vs its files");

        let objects = render(dir);
        assert!(
            of_kind(&objects, "HorizontalPodAutoscaler").is_empty(),
            "k8s/{dir}: KEDA makes the HPA; a second one on the Deployment would fight it"
        );
        let so = scaled_object(&objects, dir);
        let d: Deployment = typed(dir, only(&objects, "Deployment", dir));
        let target = &so.spec.scale_target_ref;
        assert_eq!(
            (target.api_version.as_deref(), target.kind.as_deref()),
            (Some("apps/v1"), Some("Deployment"))
        );
        assert_eq!(Some(target.name.as_str()), d.metadata.name.as_deref());
        // The base HPA's bounds and scale-down pace.
        assert_eq!(so.spec.min_replica_count, base.hpa.spec.min_replicas);
        assert_eq!(so.spec.max_replica_count, Some(base.hpa.spec.max_replicas));
        assert!(
            so.spec.idle_replica_count.is_none(),
            "no scaling to zero: a cold pod loads its model before it answers"
        );
        let behavior = so
            .spec
            .advanced
            .as_ref()
            .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
            .and_then(|h| h.behavior.clone())
            .expect("the HPA behaviour is set");
        let behavior: HorizontalPodAutoscalerBehavior = typed(dir, &behavior);
        assert_eq!(Some(&behavior), base.hpa.spec.behavior.as_ref());

        // Everything else is `k8s/` as it is, in the overlay's namespace (which the triggers
        // name; see the tests below).
        let ns = k["namespace"]
            .as_str()
            .expect("the overlay names its namespace");
        assert_eq!(so.metadata.namespace.as_deref(), Some(ns));
        let want: BTreeMap<_, _> = plain
            .iter()
            .filter(|o| o["kind"] != "HorizontalPodAutoscaler")
            .map(|o| {
                let mut o = o.clone();
                o["metadata"]["namespace"] = ns.into();
                (key(&o), o)
            })
            .collect();
        let mut got: BTreeMap<_, _> = objects
            .iter()
            .filter(|o| o["kind"] != "ScaledObject")
            .map(|o| (key(o), o.clone()))
            .collect();
        if dir == KEDA_METRICS_API {
            // Its Service for the probe ports (checked below).
            let svc = got.remove(&("Service".into(), "segserve-metrics".into()));
            assert!(svc.is_some(), "k8s/{dir}: the metrics Service");
        }
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "k8s/{dir}: the objects of k8s/ less the HPA"
        );
        assert_eq!(got, want, "k8s/{dir} changes nothing but the autoscaler");
    }
}

#[test]
fn keda_prometheus_query_adds_up_the_queue_gauges_of_the_deployments_pods() {
    let objects = render(KEDA_PROMETHEUS);
    let so = scaled_object(&objects, KEDA_PROMETHEUS);
    let d: Deployment = typed("Deployment", only(&objects, "Deployment", KEDA_PROMETHEUS));
    let [t] = &so.spec.triggers[..] else {
        panic!("one trigger")
    };
    assert_eq!(t.type_, "prometheus");
    assert!(
        t.metric_type.is_none(),
        "AverageValue, the default: the threshold is per pod"
    );
    let query = &t.metadata["query"];
    assert!(
        query.starts_with("sum("),
        "one value: KEDA refuses a query that returns several"
    );
    let s = Selectors::parse(query);
    assert_eq!(s.metrics, BTreeSet::from(QUEUE_GAUGES.map(String::from)));
    let ns = so.metadata.namespace.clone().unwrap();
    let pods = deployment_pods(d.metadata.name.as_deref().unwrap());
    assert_eq!(
        s.matchers,
        [
            Matcher::new("namespace", "=", &ns),
            Matcher::new("pod", "=~", &pods)
        ],
        "the query counts the pods of this Deployment in this namespace"
    );
    let threshold: f64 = t.metadata["threshold"].parse().expect("a number");
    assert!(threshold > 0.0);
    assert_eq!(
        t.metadata["ignoreNullValues"], "false",
        "no series is an error, not a 0 that holds the minimum"
    );
}

#[test]
fn keda_metrics_api_sums_the_gauges_over_every_pods_probe_port() {
    let objects = render(KEDA_METRICS_API);
    let so = scaled_object(&objects, KEDA_METRICS_API);
    let d: Deployment = typed("Deployment", only(&objects, "Deployment", KEDA_METRICS_API));
    let ns = so.metadata.namespace.clone().unwrap();
    // The signal and target of the Prometheus variant: the formula adds one trigger per
    // gauge, and its target is the other's threshold.
    let prometheus = scaled_object(&render(KEDA_PROMETHEUS), KEDA_PROMETHEUS);
    let sm = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref())
        .expect("scalingModifiers");
    assert_eq!(
        sm.target.as_ref(),
        Some(&prometheus.spec.triggers[0].metadata["threshold"])
    );
    assert!(
        sm.metric_type.is_none(),
        "AverageValue: the target is per pod"
    );
    let names: BTreeSet<String> = so
        .spec
        .triggers
        .iter()
        .map(|t| t.name.clone().expect("the formula names its triggers"))
        .collect();
    let terms: BTreeSet<String> = sm
        .formula
        .as_deref()
        .expect("a formula")
        .split('+')
        .map(|t| t.trim().to_string())
        .collect();
    assert_eq!(terms, names, "the formula is the sum of every trigger");
    let mut read = BTreeSet::new();
    for t in &so.spec.triggers {
        assert_eq!(t.type_, "metrics-api");
        let md = &t.metadata;
        assert_eq!(md["format"], "prometheus");
        let location = Selectors::parse(&md["valueLocation"]);
        read.extend(location.metrics);
        // One GET per ready pod, summed; one GET to a Service would read a single pod.
        assert_eq!(md["aggregateFromKubeServiceEndpoints"], "true");
        assert_eq!(md["aggregationType"], "sum");
        // http://<service>.<namespace>.svc:<port>/metrics: the pods' probe port and path.
        let url = md["url"].strip_prefix("http://").expect("plain http");
        let (host, path) = url.split_once('/').unwrap();
        let (host, port) = host.split_once(':').expect("the port in the URL");
        let port: i32 = port.parse().unwrap();
        let [service, url_ns, "svc"] = host.split('.').collect::<Vec<_>>()[..] else {
            panic!("{host}: KEDA reads <service>.<namespace> from the host")
        };
        assert_eq!(url_ns, ns, "the URL names the overlay's namespace");
        assert_eq!(port, config_probe_port(&d), "the probe port");
        let c = container(&d);
        let probe = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("probe"));
        assert_eq!(probe.map(|p| p.container_port), Some(port));
        let annotations = d
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref();
        assert_eq!(
            Some(&format!("/{path}")),
            annotations.unwrap().get("prometheus.io/path"),
            "the path Prometheus scrapes"
        );
        let svc = of_kind(&objects, "Service")
            .into_iter()
            .find(|s| s["metadata"]["name"] == service)
            .unwrap_or_else(|| panic!("no Service {service} in k8s/{KEDA_METRICS_API}"));
        let svc: Service = typed(service, svc);
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
        assert!(is_subset(spec.selector.as_ref().unwrap(), &pod_labels(&d)));
        // KEDA looks for the URL's port among the endpoints' ports, which are the pods' own.
        let sp = spec.ports.iter().flatten().find(|p| p.port == port);
        match sp.and_then(|p| p.target_port.as_ref()) {
            Some(IntOrString::String(name)) => assert_eq!(name, "probe"),
            Some(IntOrString::Int(p)) => assert_eq!(*p, port),
            None => assert!(sp.is_some(), "{service} has no port {port}"),
        }
    }
    assert_eq!(read, BTreeSet::from(QUEUE_GAUGES.map(String::from)));
}

#[tokio::test]
async fn keda_reads_gauges_the_probe_port_serves_and_the_threshold_fits_a_pods_places() {
    let prometheus = scaled_object(&render(KEDA_PROMETHEUS), KEDA_PROMETHEUS);
    let api = scaled_object(&render(KEDA_METRICS_API), KEDA_METRICS_API);
    // The server as a pod of k8s/base runs it: a session per CPU of the limit.
    let m = manifests();
    let limits = container(&m.deployment)
        .resources
        .as_ref()
        .unwrap()
        .limits
        .clone();
    let cpus = limits.unwrap()["cpu"].0.clone();
    let probe_port = common::free_port().to_string();
    // The release binary, in a process of its own: the metrics registry is process-wide, and
    // another test's server here would share its gauges.
    let model = common::model("yolov8n-seg-320").display().to_string();
    let args = [
        "--probe-port",
        &probe_port,
        "--sessions",
        &cpus,
        "--model",
        &model,
    ];
    let server = common::Binary::start(None, &args.map(String::from), |_| {});
    server.wait_ready().await;
    // The path of the metrics-api URL, on the probe port.
    let url = &api.spec.triggers[0].metadata["url"];
    let path = &url[url.find("/metrics").expect("the /metrics path")..];
    let text = reqwest::get(format!("http://127.0.0.1:{probe_port}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = Scrape::parse(&text);
    let query = &prometheus.spec.triggers[0].metadata["query"];
    for name in Selectors::parse(query).metrics {
        assert_eq!(
            scrape.kind(&name),
            Some("gauge"),
            "{name}: not a gauge the server exports"
        );
        assert!(!scrape.series(&name).is_empty(), "no {name} series");
    }
    // As KEDA reads a valueLocation: the first series of that name whose labels match.
    for t in &api.spec.triggers {
        let location = &t.metadata["valueLocation"];
        let s = Selectors::parse(location);
        let [name] = &s.metrics.iter().collect::<Vec<_>>()[..] else {
            panic!("{location}: one metric")
        };
        // KEDA reads gauges, counters and untyped samples; these are gauges.
        assert_eq!(
            scrape.kind(name),
            Some("gauge"),
            "{name}: not a gauge the server exports"
        );
        let series: Vec<_> = scrape
            .series(name)
            .into_iter()
            .filter(|(labels, _)| {
                s.matchers
                    .iter()
                    .all(|m| m.op == "=" && labels.get(&m.label) == Some(&m.value))
            })
            .collect();
        assert_eq!(series.len(), 1, "{location}: one series, one model per pod");
        assert_eq!(series[0].1, 0.0, "{location} on an idle server");
    }
    // Past a pod's places, more in flight is only queue: a threshold above them would let
    // queues grow before a pod is added (docs/deployment.md, "Choosing the threshold").
    let threshold: f64 = prometheus.spec.triggers[0].metadata["threshold"]
        .parse()
        .unwrap();
    let places = scrape.get("segserve_compute_places", &[]);
    assert!(
        threshold <= places,
        "threshold {threshold} in flight per pod, above a {cpus}-CPU pod's {places} places"
    );
}
