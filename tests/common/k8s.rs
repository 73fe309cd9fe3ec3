//! Manifests as a cluster receives them: `kustomize` renders an overlay with `kubectl
//! kustomize` (the renderer `kubectl apply -k` runs), and `Selectors` reads which series an
//! autoscaling query asks for (a Prometheus query, or the selector in a KEDA `valueLocation`),
//! so the tests can hold those names against what the server exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use segserve::cli::Cli;
use serde::Deserialize;

/// The objects `kubectl apply -k dir` would send, in kustomize's order.
pub fn kustomize(dir: &Path) -> Vec<serde_yaml::Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl not found: run `make setup-test` (apt-get install kubectl)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("kubectl kustomize prints YAML"))
        .collect()
}

/// The two gauges an autoscaler adds up per pod: the requests waiting for a place in the
/// compute stage, and those holding one.
pub const QUEUE_GAUGES: [&str; 2] = ["segserve_queue_pending_requests", "segserve_compute_busy"];

/// A regex for the names of a Deployment's pods, `<name>-<pod-template-hash>-<suffix>`: those of
/// a Deployment whose name extends this one (`segserve-predictor-<hash>-<suffix>` beside
/// `segserve`) have one part more and stay out.
pub fn deployment_pods(deployment: &str) -> String {
    format!("{deployment}-[a-z0-9]+-[a-z0-9]+")
}

/// The objects of `kind` among `objects`.
pub fn of_kind<'a>(objects: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Words of PromQL that are not metric names although no `(` may follow them: the
/// aggregations (`sum by (pod) (...)`) and the set operators.
const NOT_METRICS: [&str; 15] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
];

/// A label matcher of a series selector: `label`, `=` / `=~` / `!=` / `!~`, `value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Matcher {
    pub label: String,
    pub op: String,
    pub value: String,
}

impl Matcher {
    pub fn new(label: &str, op: &str, value: &str) -> Matcher {
        Matcher {
            label: label.into(),
            op: op.into(),
            value: value.into(),
        }
    }
}

/// The metric names and label matchers of a PromQL expression, as far as our queries use the
/// language: selectors (`name{label="value", ...}`) joined by operators, inside aggregations
/// and functions. A name followed by `(` is a function or an aggregation, not a metric.
#[derive(Debug, Default)]
pub struct Selectors {
    pub metrics: BTreeSet<String>,
    pub matchers: Vec<Matcher>,
}

impl Selectors {
    pub fn parse(query: &str) -> Selectors {
        let mut out = Selectors::default();
        let chars: Vec<char> = query.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if ["by", "without", "on", "ignoring"].contains(&word.as_str()) {
                    // A list of label names follows, not metrics.
                    i += chars[i..]
                        .iter()
                        .position(|&c| c == ')')
                        .map_or(0, |p| p + 1);
                } else if next != Some(&'(') && !NOT_METRICS.contains(&word.as_str()) {
                    out.metrics.insert(word);
                }
            } else if c == '{' {
                let end = i + chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .unwrap_or_else(|| panic!("unclosed selector in {query}"));
                let body: String = chars[i + 1..end].iter().collect();
                out.matchers.extend(matchers(&body, query));
                i = end + 1;
            } else if c.is_ascii_digit() {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        out
    }
}

/// `label="value", label=~"regex"` (no quote or comma inside a value: ours have none).
fn matchers(body: &str, query: &str) -> Vec<Matcher> {
    body.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| {
            let at = m
                .find(['=', '!'])
                .unwrap_or_else(|| panic!("matcher {m:?} in {query}"));
            let (label, rest) = m.split_at(at);
            let op_len =
                if rest.starts_with("=~") || rest.starts_with("!=") || rest.starts_with("!~") {
                    2
                } else {
                    1
                };
            let (op, value) = rest.split_at(op_len);
            let value = value
                .trim()
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("unquoted value in {m:?} of {query}"));
            Matcher {
                label: label.trim().to_string(),
                op: op.to_string(),
                value: value.to_string(),
            }
        })
        .collect()
}

/// Every environment variable the binary reads: the `env = "..."` names clap knows for
/// `serve`, plus `RUST_LOG` (the log filter, read by tracing's `EnvFilter` in main.rs).
pub fn env_names() -> BTreeSet<String> {
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

/// Parses `raw` (the YAML of `what`) into `T`, and fails on any field `T` does not know: the
/// typed value, written back out, must equal the YAML as written (k8s-openapi skips unknown
/// fields silently, so a misspelt `readinesProbe` would otherwise pass).
pub fn typed<T>(what: &str, raw: &serde_yaml::Value) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_yaml::from_value(raw.clone()).unwrap_or_else(|e| {
        panic!(
            "{what} does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    assert_eq!(
        &serde_yaml::to_value(&typed).unwrap(),
        raw,
        "{what}: fields lost in parsing (unknown or misspelt?)"
    );
    typed
}
