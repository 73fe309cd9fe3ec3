//! The Kubernetes manifests in `k8s/` (and the Dockerfile they run) checked against the code:
//! they parse into the real API types with no unknown fields, the ports are the server's
//! default port, the probe paths answer 200 on a ready server, every environment variable is
//! one the binary reads, and the shutdown timings fit the pod's grace period. The GPU overlay
//! in `k8s/gpu/` is rendered onto them (kustomize's strategic merge, for the parts it uses)
//! and goes through the same checks, plus its own: a GPU per pod, `--device cuda`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use segserve::cli::{Cli, Command};
use segserve::engine::DeviceChoice;

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

/// Parses `k8s/<file>` into `T`, and fails on any field the API type does not know: the
/// typed value, written back out, must equal the YAML as written (k8s-openapi skips unknown
/// fields silently, so a misspelt `readinesProbe` would otherwise pass).
fn load<T>(file: &str) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    typed(file, read_yaml(&k8s_dir().join(file)))
}

/// [`load`]'s check on YAML already read (and, for the overlay, patched).
fn typed<T>(file: &str, raw: serde_yaml::Value) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_yaml::from_value(raw.clone()).unwrap_or_else(|e| {
        panic!(
            "{file} does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let back = serde_yaml::to_value(&typed).unwrap();
    assert_eq!(
        back, raw,
        "{file}: fields lost in parsing (unknown or misspelt?)"
    );
    typed
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
    let deployment = typed(&f, v);
    let (f, v) = take("Service");
    let service = typed(&f, v);
    let (f, v) = take("HorizontalPodAutoscaler");
    let hpa = typed(&f, v);
    let (f, v) = take("PodDisruptionBudget");
    let pdb = typed(&f, v);
    let (f, v) = take("ConfigMap");
    let config = typed(&f, v);
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

/// `segserve serve` with no flags and no environment: the defaults the manifests rely on.
fn default_serve_args() -> segserve::cli::ServeArgs {
    let cli = <Cli as clap::Parser>::try_parse_from(["segserve", "serve"]).unwrap();
    let Command::Serve(a) = cli.command else {
        panic!("expected the serve command")
    };
    a
}

/// Every environment variable the binary reads: the `env = "..."` names clap knows for
/// `serve`, plus `RUST_LOG` (the log filter, read by tracing's `EnvFilter` in main.rs).
fn env_names() -> BTreeSet<String> {
    let cmd = Cli::command();
    let serve = cmd.find_subcommand("serve").expect("serve subcommand");
    let mut names: BTreeSet<String> = serve
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    names.insert("RUST_LOG".into());
    names
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
fn config_probe_port(m: &Manifests) -> i32 {
    container(&m.deployment)
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
        let port = i32::from(default_serve_args().port);
        let c = container(&m.deployment);
        let ports = c.ports.as_ref().unwrap();
        assert_eq!(ports.len(), 2, "the API port and the probe port");
        let http = ports.iter().find(|p| p.name.as_deref() == Some("http"));
        assert_eq!(http.unwrap().container_port, port, "containerPort");
        let probe = ports.iter().find(|p| p.name.as_deref() == Some("probe"));
        assert_eq!(
            probe.expect("a port named probe").container_port,
            config_probe_port(&m),
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
            config_probe_port(&m).to_string()
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
    let probe_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
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
