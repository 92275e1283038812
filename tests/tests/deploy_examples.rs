//! deploy/ is what operators install, so it is checked against the real code:
//!
//! - every example config (`deploy/examples/server*.toml`, `agent*.toml`)
//!   loads with the real loader, also with every commented-out optional key
//!   and section switched on (so the documented keys are real keys);
//! - every Kubernetes manifest parses as YAML and names its apiVersion, kind
//!   and metadata.name; the TOML inside each ConfigMap loads with the real
//!   loader; the workloads agree with those configs (ports, probes, mounted
//!   paths, the Service the agent dials) and keep their security contexts;
//! - the systemd units pass `systemd-analyze verify` against the built
//!   binaries (skipped, with a message, where systemd-analyze is missing) and
//!   use the paths the example configs use;
//! - the Dockerfile builds the workspace's real packages and copies the
//!   binaries that build produces.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;
use sigil_agent::config::AgentConfig;
use sigil_server::config::ServerConfig;
use sigil_tests::{bin, run_bounded, text};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn examples() -> PathBuf {
    deploy().join("examples")
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------- examples

/// `text` with every commented-out `[section]` header and `key = value` line
/// switched on, and how many lines that was.
fn uncomment_optional(text: &str) -> (String, usize) {
    let mut n = 0;
    let out = text
        .lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_string();
            };
            let is_section = rest.starts_with('[')
                && rest.ends_with(']')
                && rest[1..rest.len() - 1].bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                });
            let is_key = rest.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
            if is_section || is_key {
                n += 1;
                rest.to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    (out, n)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Loader {
    Server,
    Agent,
}

/// Which loader a config file is for, from its name (`server*`, `agent*`);
/// `None` for `helper*` and `proxy*`, which their own tests load.
fn loader_for(name: &str) -> Option<Loader> {
    if name.starts_with("server") {
        Some(Loader::Server)
    } else if name.starts_with("agent") {
        Some(Loader::Agent)
    } else if name.starts_with("helper") || name.starts_with("proxy") {
        None
    } else {
        panic!(
            "deploy/examples/{name}: name it server*.toml, agent*.toml, helper*.toml or proxy*.toml"
        )
    }
}

fn load_text(loader: Loader, text: &str) -> Result<(), String> {
    match loader {
        Loader::Server => ServerConfig::parse(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        Loader::Agent => AgentConfig::parse(text)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

#[test]
fn every_example_config_loads_with_its_loader() {
    let mut loaded = BTreeSet::new();
    for path in files_in(&examples(), "toml") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(loader) = loader_for(&name) else {
            continue;
        };
        match loader {
            Loader::Server => drop(ServerConfig::load(&path).unwrap_or_else(|e| panic!("{e}"))),
            Loader::Agent => drop(AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"))),
        }
        let (all_on, switched) = uncomment_optional(&read(&path));
        assert!(switched > 0, "{name}: expected commented-out optional keys");
        load_text(loader, &all_on)
            .unwrap_or_else(|e| panic!("{name} with its optional keys switched on: {e}"));
        loaded.insert(name);
    }
    for must in ["server.toml", "agent.toml"] {
        assert!(loaded.contains(must), "{must} missing: {loaded:?}");
    }
}

#[test]
fn a_misspelt_key_in_an_example_is_refused() {
    // The check above can fail: the loaders refuse unknown keys, also in the
    // optional sections the examples document.
    for (name, loader, good, bad) in [
        ("server.toml", Loader::Server, "ca_ttl =", "ca_tll ="),
        (
            "agent.toml",
            Loader::Agent,
            "socket_path =",
            "sokcet_path =",
        ),
    ] {
        let text = read(&examples().join(name));
        assert!(text.contains(good));
        let e = load_text(loader, &text.replacen(good, bad, 1)).unwrap_err();
        assert!(e.contains(bad.trim_end_matches(" =")), "{name}: {e}");
    }
    let server = read(&examples().join("server.toml"));
    let (on, _) = uncomment_optional(&server.replacen("# key_file =", "# kye_file =", 1));
    let e = load_text(Loader::Server, &on).unwrap_err();
    assert!(e.contains("kye_file"), "{e}");
}

#[test]
fn example_configs_keep_the_documented_defaults() {
    let s = ServerConfig::load(&examples().join("server.toml")).unwrap();
    assert_eq!(s.trust_domain.as_str(), "example.org");
    assert_eq!(s.data_dir, PathBuf::from("/var/lib/sigil/server"));
    assert_eq!(
        s.admin_socket,
        PathBuf::from("/var/lib/sigil/server/admin.sock")
    );
    assert_eq!(s.bind_address.port(), 8081);
    assert_eq!(s.ca_ttl.as_secs(), 24 * 3600);
    assert_eq!(s.default_x509_svid_ttl.as_secs(), 3600);
    assert_eq!(s.rate_limit.attestations_per_second, 10);
    assert_eq!(s.rate_limit.csrs_per_second, 5000);
    assert!(s.bundle_endpoint.is_some());
    assert_eq!(
        s.health.as_ref().map(|h| h.address.to_string()),
        Some("127.0.0.1:8088".to_string())
    );

    let a = AgentConfig::load(&examples().join("agent.toml")).unwrap();
    assert_eq!(a.trust_domain.as_str(), "example.org");
    assert_eq!(a.data_dir, PathBuf::from("/var/lib/sigil/agent"));
    assert_eq!(a.socket_path, PathBuf::from("/run/sigil/agent.sock"));
    assert_eq!(a.max_exe_hash_bytes, 256 * 1024 * 1024);
    assert!(!a.insecure_bootstrap);
    assert!(a.join_token.is_none());
    assert_eq!(
        a.health.as_ref().map(|h| h.address.to_string()),
        Some("127.0.0.1:8089".to_string())
    );
}

// -------------------------------------------------------------- kubernetes

struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every YAML document of every `deploy/k8s/*.yaml`, in file-name order (the
/// order `kubectl apply -f deploy/k8s/` uses).
fn manifests() -> Vec<Doc> {
    manifests_in(&deploy().join("k8s"))
}

/// Every YAML document of every `*.yaml` directly in `dir`, in file-name order.
fn manifests_in(dir: &Path) -> Vec<Doc> {
    let mut docs = Vec::new();
    let files = files_in(dir, "yaml");
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for (i, de) in serde_yaml_ng::Deserializer::from_str(&read(&path)).enumerate() {
            let value = Value::deserialize(de)
                .unwrap_or_else(|e| panic!("{file}: document {}: not YAML: {e}", i + 1));
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
        .value
}

fn the_only<'a>(docs: &'a [Doc], kind: &str) -> &'a Value {
    let found: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    &found[0].value
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

const NAMESPACE: &str = "sigil";

#[test]
fn k8s_manifests_are_well_formed() {
    let docs = manifests();
    let mut seen = BTreeSet::new();
    for (i, d) in docs.iter().enumerate() {
        let v = &d.value;
        for key in ["apiVersion", "kind"] {
            assert!(
                v[key].as_str().is_some_and(|s| !s.is_empty()),
                "{}: a document has no {key}",
                d.file
            );
        }
        assert!(
            !d.name().is_empty(),
            "{}: a {} has no metadata.name",
            d.file,
            d.kind()
        );
        if d.kind() == "Namespace" {
            assert_eq!(d.name(), NAMESPACE);
            assert_eq!(i, 0, "the Namespace must be applied first");
        } else {
            assert_eq!(
                v["metadata"]["namespace"].as_str(),
                Some(NAMESPACE),
                "{}: {} {} is not in namespace {NAMESPACE}",
                d.file,
                d.kind(),
                d.name()
            );
        }
        assert!(
            seen.insert((d.kind().to_string(), d.name().to_string())),
            "{}: {} {} defined twice",
            d.file,
            d.kind(),
            d.name()
        );
    }
    let kinds: BTreeMap<&str, usize> = docs.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.kind()).or_default() += 1;
        m
    });
    for (kind, n) in [
        ("Namespace", 1),
        ("ServiceAccount", 2),
        ("ConfigMap", 2),
        ("StatefulSet", 1),
        ("DaemonSet", 1),
    ] {
        assert_eq!(kinds.get(kind).copied(), Some(n), "{kind}: {kinds:?}");
    }
}

/// The TOML texts of every ConfigMap, by `(ConfigMap name, key)`, each
/// loaded with the loader its key names.
fn configmap_configs(
    docs: &[Doc],
) -> (
    BTreeMap<String, ServerConfig>,
    BTreeMap<String, AgentConfig>,
) {
    let mut servers = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for d in docs.iter().filter(|d| d.kind() == "ConfigMap") {
        let data = d.value["data"]
            .as_mapping()
            .unwrap_or_else(|| panic!("ConfigMap {} has no data", d.name()));
        for (key, text) in data {
            let key = str_of(key);
            let text = str_of(text);
            let what = format!("{}: ConfigMap {} key {key}", d.file, d.name());
            match loader_for(key) {
                Some(Loader::Server) => {
                    let c = ServerConfig::parse(text).unwrap_or_else(|e| panic!("{what}: {e}"));
                    servers.insert(d.name().to_string(), c);
                }
                Some(Loader::Agent) => {
                    let c = AgentConfig::parse(text).unwrap_or_else(|e| panic!("{what}: {e}"));
                    agents.insert(d.name().to_string(), c);
                }
                None => panic!("{what}: no loader for it"),
            }
        }
    }
    (servers, agents)
}

#[test]
fn k8s_configmaps_load_with_the_real_loaders() {
    let docs = manifests();
    let (servers, agents) = configmap_configs(&docs);
    assert_eq!(servers.len(), 1, "{:?}", servers.keys());
    assert_eq!(agents.len(), 1, "{:?}", agents.keys());

    // And that check can fail: a misspelt key in the embedded text is refused.
    let cm = find(&docs, "ConfigMap", "sigil-server-config");
    let text = str_of(&cm["data"]["server.toml"]);
    let e = ServerConfig::parse(&text.replacen("bind_address", "bind_adress", 1)).unwrap_err();
    assert!(e.to_string().contains("bind_adress"), "{e}");
}

/// The pod template's only container.
fn container(workload: &Value) -> &Value {
    let cs = seq(&workload["spec"]["template"]["spec"]["containers"]);
    assert_eq!(cs.len(), 1, "one container per pod");
    &cs[0]
}

fn container_port(c: &Value, name: &str) -> u64 {
    seq(&c["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| {
            panic!(
                "container {} has no port {name}",
                c["name"].as_str().unwrap_or("?")
            )
        })
}

/// The volume mounted at the longest mount path that contains `path`, and
/// whether that mount is read-only.
fn volume_at<'a>(workload: &'a Value, path: &Path) -> (&'a Value, bool) {
    let pod = &workload["spec"]["template"]["spec"];
    let mount = seq(&container(workload)["volumeMounts"])
        .iter()
        .filter(|m| path.starts_with(str_of(&m["mountPath"])))
        .max_by_key(|m| str_of(&m["mountPath"]).len())
        .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()));
    let name = str_of(&mount["name"]);
    let volume = seq(&pod["volumes"])
        .iter()
        .chain(
            seq(&workload["spec"]["volumeClaimTemplates"])
                .iter()
                .map(|t| &t["metadata"]),
        )
        .find(|v| v["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("mount {name} names no volume"));
    (volume, mount["readOnly"].as_bool().unwrap_or(false))
}

/// The pod reads its config from the ConfigMap the test loaded: the
/// container's `--config` path lies in a volume made from that ConfigMap, and
/// the file name is one of its keys.
fn config_arg_is_from(workload: &Value, configmap: &str, key: &str) {
    let c = container(workload);
    let words: Vec<String> = seq(&c["command"])
        .iter()
        .chain(seq(&c["args"]))
        .flat_map(|w| {
            str_of(w)
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let i = words
        .iter()
        .position(|w| w == "--config")
        .expect("the container passes --config");
    let path = PathBuf::from(&words[i + 1]);
    assert_eq!(path.file_name().unwrap().to_string_lossy(), key);
    let (volume, read_only) = volume_at(workload, &path);
    assert_eq!(volume["configMap"]["name"].as_str(), Some(configmap));
    assert!(read_only, "the config mount should be read-only");
}

fn probes_use_health_endpoints(c: &Value) {
    for (probe, path) in [
        ("startupProbe", "/live"),
        ("livenessProbe", "/live"),
        ("readinessProbe", "/ready"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("health"), "{probe}");
    }
}

fn common_hardening(c: &Value) {
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    let drop: Vec<&str> = seq(&sc["capabilities"]["drop"])
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(drop, ["ALL"]);
}

#[test]
fn k8s_server_statefulset_matches_its_config() {
    let docs = manifests();
    let (servers, _) = configmap_configs(&docs);
    let sts = the_only(&docs, "StatefulSet");
    let config = &servers["sigil-server-config"];
    let c = container(sts);

    assert_eq!(
        sts["spec"]["replicas"].as_u64(),
        Some(1),
        "one server per sled store"
    );
    config_arg_is_from(sts, "sigil-server-config", "server.toml");
    // data_dir is on the persistent volume, not in the container.
    let (volume, read_only) = volume_at(sts, &config.data_dir);
    assert!(
        seq(&sts["spec"]["volumeClaimTemplates"])
            .iter()
            .any(|t| t["metadata"]["name"] == volume["name"]),
        "data_dir {} is not on a volumeClaimTemplate",
        config.data_dir.display()
    );
    assert!(!read_only);
    assert!(config.admin_socket.starts_with(&config.data_dir));

    assert_eq!(
        container_port(c, "agent-api"),
        u64::from(config.bind_address.port())
    );
    let bundle = config.bundle_endpoint.as_ref().expect("bundle endpoint on");
    assert_eq!(
        container_port(c, "bundle"),
        u64::from(bundle.address.port())
    );
    assert!(
        config.bind_address.ip().is_unspecified(),
        "reachable from other pods"
    );
    probes_use_health_endpoints(c);

    // The Service agents dial targets the container's named ports.
    let svc = find(&docs, "Service", "sigil-server");
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_mapping().expect("a selector") {
        assert_eq!(&labels[str_of(k)], v, "the Service selects the server pods");
    }
    for p in seq(&svc["spec"]["ports"]) {
        container_port(c, str_of(&p["targetPort"]));
    }
    assert_eq!(
        sts["spec"]["serviceName"]
            .as_str()
            .map(|s| find(&docs, "Service", s)["spec"]["clusterIP"].clone()),
        Some(Value::from("None")),
        "serviceName names a headless Service"
    );

    let pod = &sts["spec"]["template"]["spec"];
    find(&docs, "ServiceAccount", str_of(&pod["serviceAccountName"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_ne!(pod["securityContext"]["runAsUser"].as_u64(), Some(0));
    common_hardening(c);
    assert!(c["securityContext"]["capabilities"]["add"].is_null());
}

#[test]
fn k8s_agent_daemonset_matches_its_config() {
    let docs = manifests();
    let (_, agents) = configmap_configs(&docs);
    let ds = the_only(&docs, "DaemonSet");
    let config = &agents["sigil-agent-config"];
    let c = container(ds);
    let pod = &ds["spec"]["template"]["spec"];

    assert_eq!(
        pod["hostPID"].as_bool(),
        Some(true),
        "the attestor must see workload pids"
    );
    config_arg_is_from(ds, "sigil-agent-config", "agent.toml");

    // The Workload API socket and the agent's identity live on the node.
    let (socket_vol, _) = volume_at(ds, &config.socket_path);
    let socket_dir = config.socket_path.parent().unwrap();
    assert_eq!(socket_vol["hostPath"]["path"].as_str(), socket_dir.to_str());
    let (data_vol, read_only) = volume_at(ds, &config.data_dir);
    assert!(
        data_vol["hostPath"]["path"].is_string(),
        "data_dir on a hostPath"
    );
    assert!(!read_only);
    let (bundle_vol, _) = volume_at(ds, config.trust_bundle_path.as_ref().unwrap());
    assert!(bundle_vol["configMap"]["name"].is_string());

    // server_address is the StatefulSet's headless Service, by cluster DNS:
    // it resolves to every server replica (issue 17).
    assert_eq!(
        config.server_address.targets(),
        [headless_address(&docs, the_only(&docs, "StatefulSet"))]
    );

    probes_use_health_endpoints(c);
    find(&docs, "ServiceAccount", str_of(&pod["serviceAccountName"]));
    common_hardening(c);
    let add: BTreeSet<&str> = seq(&c["securityContext"]["capabilities"]["add"])
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(add, BTreeSet::from(["SYS_PTRACE", "DAC_READ_SEARCH"]));
    assert_eq!(c["securityContext"]["runAsUser"].as_u64(), Some(0));
}

/// Issue 21 item 6: every agent pod mounted one Secret holding every node's
/// join token, so root on one node could attest as any other. No agent pod
/// mounts a Secret or takes one in its environment; nodes attest with
/// x509pop, each from its own node's certificate and key (a hostPath), and
/// the server trusts the node CA from a ConfigMap.
#[test]
fn i21_6_agent_pods_mount_no_shared_join_tokens() {
    let docs = manifests();
    let (servers, agents) = configmap_configs(&docs);
    let ds = the_only(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    for v in seq(&pod["volumes"]) {
        assert!(
            v["secret"].is_null() && v["projected"].is_null(),
            "the agent DaemonSet mounts {v:?}: a Secret in an agent pod is readable by every node"
        );
    }
    let c = container(ds);
    for e in seq(&c["env"]).iter().chain(seq(&c["envFrom"])) {
        assert!(
            e["valueFrom"]["secretKeyRef"].is_null() && e["secretRef"].is_null(),
            "the agent takes a Secret into its environment: {e:?}"
        );
    }
    let words = format!("{:?} {:?}", c["command"], c["args"]);
    assert!(
        !words.contains("join-token") && !words.contains("SIGIL_JOIN_TOKEN"),
        "the agent's command still reads a join token: {words}"
    );
    // x509pop, from the node's own files.
    let x = agents["sigil-agent-config"]
        .node_attestor
        .x509pop
        .as_ref()
        .expect("the agent config attests with x509pop");
    for path in [&x.cert_path, &x.key_path] {
        let (vol, read_only) = volume_at(ds, path);
        assert!(
            vol["hostPath"]["path"].is_string(),
            "{} is not on a hostPath (the node's own certificate)",
            path.display()
        );
        assert!(read_only, "{} is mounted writable", path.display());
    }
    let server_x = servers["sigil-server-config"]
        .node_attestor
        .x509pop
        .as_ref()
        .expect("the server accepts x509pop");
    let sts = the_only(&docs, "StatefulSet");
    let (vol, read_only) = volume_at(sts, &server_x.ca_bundle_path);
    assert!(vol["configMap"]["name"].is_string(), "the node CA: {vol:?}");
    assert!(read_only);
}

#[test]
fn k8s_health_ports_match_the_configs() {
    // The probes go to the port the [health] section listens on, on the pod
    // IP (where the kubelet probes).
    let docs = manifests();
    let (servers, agents) = configmap_configs(&docs);
    for (kind, health) in [
        ("StatefulSet", &servers["sigil-server-config"].health),
        ("DaemonSet", &agents["sigil-agent-config"].health),
    ] {
        let addr = health
            .as_ref()
            .unwrap_or_else(|| panic!("{kind}: its config has no [health]"))
            .address;
        assert!(
            addr.ip().is_unspecified(),
            "{kind}: {addr} is not reachable by the kubelet"
        );
        let c = container(the_only(&docs, kind));
        assert_eq!(
            container_port(c, "health"),
            u64::from(addr.port()),
            "{kind}"
        );
    }
}

/// `<headless Service>.<namespace>.svc:<agent-api port>` of the server
/// StatefulSet `sts`: the name that resolves to every replica.
fn headless_address(docs: &[Doc], sts: &Value) -> String {
    let svc = find(docs, "Service", str_of(&sts["spec"]["serviceName"]));
    assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("None"), "headless");
    let port = seq(&svc["spec"]["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some("agent-api"))
        .and_then(|p| p["port"].as_u64())
        .expect("the headless Service has an agent-api port");
    assert_eq!(port, container_port(container(sts), "agent-api"));
    let ns = str_of(&svc["metadata"]["namespace"]);
    format!("{}.{ns}.svc:{port}", str_of(&svc["metadata"]["name"]))
}

/// Issue 17 item 6: `deploy/k8s/ha/10-server.yaml` replaces
/// `deploy/k8s/10-server.yaml` (the same objects, plus a disruption budget)
/// with two replicas on PostgreSQL: its config loads with the real loader,
/// the password and database CA come from the Secret `sigil-postgres`, each
/// replica keeps its CA keys on its own volume, replicas avoid sharing a
/// node, and the agents' `server_address` is the headless Service, which
/// resolves to both.
#[test]
fn item6_k8s_ha_server_runs_two_replicas_on_postgres() {
    let single = manifests();
    let ha = manifests_in(&deploy().join("k8s").join("ha"));
    let names = |docs: &[Doc]| -> BTreeSet<(String, String)> {
        docs.iter()
            .map(|d| (d.kind().to_string(), d.name().to_string()))
            .collect()
    };
    let replaced: BTreeSet<_> = single
        .iter()
        .filter(|d| d.file == "10-server.yaml")
        .map(|d| (d.kind().to_string(), d.name().to_string()))
        .collect();
    let extra: Vec<_> = names(&ha).difference(&replaced).cloned().collect();
    assert_eq!(
        extra,
        [(
            "PodDisruptionBudget".to_string(),
            "sigil-server".to_string()
        )]
    );
    assert!(replaced.is_subset(&names(&ha)), "a drop-in replacement");
    for d in &ha {
        assert_eq!(d.value["metadata"]["namespace"].as_str(), Some(NAMESPACE));
    }
    let (servers, agents) = configmap_configs(&ha);
    assert!(agents.is_empty());
    let config = &servers["sigil-server-config"];
    let pg = config.store.postgres.as_ref().expect("[store.postgres]");
    assert!(
        pg.connection_string.contains("sslmode=verify-full"),
        "{}",
        pg.connection_string
    );
    let sts = the_only(&ha, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"].as_u64(), Some(2));
    config_arg_is_from(sts, "sigil-server-config", "server.toml");
    // The password and the CA: files of the Secret, mounted read-only.
    for path in [pg.password_file.as_ref(), pg.ca_file.as_ref()] {
        let path = path.expect("password_file and ca_file are set");
        let (volume, read_only) = volume_at(sts, path);
        assert!(read_only, "{}", path.display());
        assert_eq!(
            volume["secret"]["secretName"].as_str(),
            Some("sigil-postgres"),
            "{}",
            path.display()
        );
        let key = path.file_name().unwrap().to_string_lossy();
        assert!(
            seq(&volume["secret"]["items"])
                .iter()
                .any(|i| i["path"].as_str() == Some(&*key)),
            "{key} is not an item of the Secret volume"
        );
    }
    // Each replica its own data_dir (CA keys) on its own claim.
    let (volume, read_only) = volume_at(sts, &config.data_dir);
    assert!(!read_only);
    assert!(
        seq(&sts["spec"]["volumeClaimTemplates"])
            .iter()
            .any(|t| t["metadata"]["name"] == volume["name"])
    );
    assert!(config.bind_address.ip().is_unspecified());
    let anti = &sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert_eq!(
        seq(&anti["requiredDuringSchedulingIgnoredDuringExecution"])[0]["topologyKey"].as_str(),
        Some("kubernetes.io/hostname")
    );
    let c = container(sts);
    probes_use_health_endpoints(c);
    common_hardening(c);
    // The agents (deploy/k8s/20-agent.yaml) dial every replica.
    let (_, agents) = configmap_configs(&single);
    assert_eq!(
        agents["sigil-agent-config"].server_address.targets(),
        [headless_address(&ha, sts)]
    );
}

// ----------------------------------------------------------------- systemd

const UNITS: [&str; 3] = [
    "sigil-server.service",
    "sigil-agent.service",
    "sigil-helper@.service",
];

fn unit_text(name: &str) -> String {
    read(&deploy().join("systemd").join(name))
}

/// The values of `key=` lines in a unit.
fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        println!("SKIPPED: {} not found", analyze.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for name in UNITS {
        let mut unit = unit_text(name);
        // The binaries are not installed: point the unit at the built ones.
        let runs = if name == "sigil-server.service" {
            "sigil-server"
        } else {
            "sigil-agent"
        };
        let from = format!("/usr/local/bin/{runs} ");
        assert!(unit.contains(&from), "{name} does not run {from}");
        unit = unit.replace(&from, &format!("{} ", bin(runs).display()));
        // A template is verified as an instance of it.
        let file = name.replace("@.", "@verify.");
        fs::write(dir.path().join(&file), unit).unwrap();
        paths.push(dir.path().join(file));
    }
    let out = run_bounded(Command::new(analyze).arg("verify").args(&paths));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // verify exits 0 on unknown keys and bad values (it only warns), so any
    // message about our units is a failure too.
    let ours: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| {
            UNITS
                .iter()
                .any(|u| l.contains(&u.replace("@.", "@verify.")))
                || l.contains(dir.path().to_str().unwrap())
        })
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{stdout}{stderr}"
    );

    // Report the exposure scores (informational; offline mode needs systemd ≥ 250).
    for p in &paths {
        let out = run_bounded(
            Command::new(analyze)
                .args(["security", "--offline=true"])
                .arg(p),
        );
        if let Some(line) = text(&out.stdout).lines().last() {
            println!("{line}");
        }
    }
}

#[test]
fn systemd_verify_can_fail() {
    // The check above catches a bad directive even though verify exits 0.
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        println!("SKIPPED: {} not found", analyze.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_text("sigil-server.service")
        .replace(
            "/usr/local/bin/sigil-server ",
            &format!("{} ", bin("sigil-server").display()),
        )
        .replace("ProtectSystem=strict", "ProtectSystem=stirct");
    let path = dir.path().join("sigil-server.service");
    fs::write(&path, unit).unwrap();
    let out = run_bounded(Command::new(analyze).arg("verify").arg(&path));
    assert!(
        text(&out.stderr).contains("stirct"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn systemd_units_use_the_example_paths() {
    let server = unit_text("sigil-server.service");
    let agent = unit_text("sigil-agent.service");
    let s = ServerConfig::load(&examples().join("server.toml")).unwrap();
    let a = AgentConfig::load(&examples().join("agent.toml")).unwrap();

    // data_dir is the unit's StateDirectory (the only writable path).
    assert_eq!(
        Path::new("/var/lib").join(directive(&server, "StateDirectory")[0]),
        s.data_dir
    );
    assert_eq!(
        Path::new("/var/lib").join(directive(&agent, "StateDirectory")[0]),
        a.data_dir
    );
    // The socket is in the agent's RuntimeDirectory, reachable by everyone.
    assert_eq!(
        Path::new("/run").join(directive(&agent, "RuntimeDirectory")[0]),
        a.socket_path.parent().unwrap()
    );
    assert_eq!(directive(&agent, "RuntimeDirectoryMode"), ["0755"]);
    for (unit, file) in [(&server, "server.toml"), (&agent, "agent.toml")] {
        let exec = directive(unit, "ExecStart")[0];
        assert!(
            exec.contains(&format!("--config /etc/sigil/{file}")),
            "{exec}"
        );
        for must in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "LockPersonality=yes",
            "MemoryDenyWriteExecute=yes",
            "SystemCallFilter=@system-service",
        ] {
            assert!(
                unit.lines().any(|l| l == must),
                "{file}'s unit lacks {must}"
            );
        }
    }
    // Least privilege: the server needs no capability, the agent exactly the
    // two its workload attestor needs.
    assert_eq!(directive(&server, "CapabilityBoundingSet"), [""]);
    assert_eq!(
        directive(&agent, "CapabilityBoundingSet"),
        ["CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"]
    );
    assert_eq!(
        directive(&agent, "AmbientCapabilities"),
        ["CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"]
    );
    assert!(
        directive(&agent, "ProtectProc").is_empty(),
        "the agent must see every pid"
    );
    assert!(
        directive(&agent, "PrivateUsers").is_empty(),
        "peer uids must stay real"
    );
}

/// Issue 17 item 6: the PostgreSQL drop-in hands the server the database
/// password as a systemd credential, at the path
/// `deploy/examples/server-postgres.toml` names, and passes `systemd-analyze
/// verify` with the unit (a misspelt key in it is reported: the check can
/// fail; skipped where systemd-analyze is missing).
#[test]
fn item6_systemd_postgres_dropin_matches_the_example() {
    let dropin_path = deploy().join("systemd/sigil-server.service.d/postgres.conf");
    let dropin = read(&dropin_path);
    let s = ServerConfig::load(&examples().join("server-postgres.toml")).unwrap();
    let pg = s.store.postgres.as_ref().expect("[store.postgres]");
    let creds = directive(&dropin, "LoadCredential");
    assert_eq!(creds.len(), 1, "{creds:?}");
    let (name, source) = creds[0].split_once(':').expect("name:path");
    assert!(source.starts_with("/etc/sigil/"), "{source}");
    assert_eq!(
        pg.password_file.as_deref(),
        Some(Path::new(&format!(
            "/run/credentials/sigil-server.service/{name}"
        )))
    );
    let server = unit_text("sigil-server.service");
    assert_eq!(
        Path::new("/var/lib").join(directive(&server, "StateDirectory")[0]),
        s.data_dir
    );

    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        println!("SKIPPED: {} not found", analyze.display());
        return;
    }
    let verify = |dropin: &str| -> String {
        let dir = tempfile::tempdir().unwrap();
        let unit = server.replace(
            "/usr/local/bin/sigil-server ",
            &format!("{} ", bin("sigil-server").display()),
        );
        fs::write(dir.path().join("sigil-server.service"), unit).unwrap();
        let d = dir.path().join("sigil-server.service.d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("postgres.conf"), dropin).unwrap();
        let out = run_bounded(
            Command::new(analyze)
                .arg("verify")
                .arg(dir.path().join("sigil-server.service")),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let dir_name = dir.path().to_str().unwrap().to_string();
        text(&out.stdout)
            .lines()
            .chain(text(&out.stderr).lines())
            .filter(|l| l.contains(&dir_name) || l.contains("sigil-server.service"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(verify(&dropin), "", "systemd-analyze verify");
    let bad = verify(&dropin.replace("LoadCredential=", "LoadCredentail="));
    assert!(bad.contains("LoadCredentail"), "{bad}");
}

// -------------------------------------------------------------- Dockerfile

#[test]
fn dockerfile_builds_the_workspace_binaries() {
    let text = read(&deploy().join("Dockerfile"));
    // Join continuation lines so each instruction is one line.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(&str, &str)> = joined
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .collect();

    let from: Vec<&str> = instructions
        .iter()
        .filter(|(i, _)| *i == "FROM")
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(from, ["rust:1-bookworm AS build", "debian:bookworm-slim"]);

    // The build context is the repository root: every COPY source exists
    // there and the Dockerfile's ignore file does not drop it.
    let ignore = read(&deploy().join("Dockerfile.dockerignore"));
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut copied = Vec::new();
    for (_, args) in instructions.iter().filter(|(i, _)| *i == "COPY") {
        if args.starts_with("--from=") {
            copied.push(*args);
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            assert!(
                repo().join(src).exists(),
                "COPY {src}: not in the repository"
            );
            assert!(
                !ignored.contains(src),
                "COPY {src} is in Dockerfile.dockerignore"
            );
        }
    }
    // --locked needs every workspace member.
    let manifest: toml::Table = read(&repo().join("Cargo.toml")).parse().unwrap();
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        let m = member.as_str().unwrap();
        assert!(
            instructions
                .iter()
                .any(|(i, a)| *i == "COPY" && a.split_whitespace().any(|w| w == m)),
            "workspace member {m} is not copied"
        );
    }

    // The build names real packages and the binaries it copies exist.
    let build = instructions
        .iter()
        .find(|(i, a)| *i == "RUN" && a.contains("cargo build"))
        .expect("a cargo build step")
        .1;
    assert!(
        build.contains("--release") && build.contains("--locked"),
        "{build}"
    );
    for pkg in ["sigil-server", "sigil-agent"] {
        assert!(build.contains(&format!("-p {pkg}")), "{build}");
        let cargo: toml::Table = read(&repo().join(&pkg[6..]).join("Cargo.toml"))
            .parse()
            .unwrap();
        assert_eq!(cargo["package"]["name"].as_str(), Some(pkg));
        assert!(build.contains(&format!("target/release/{pkg} ")), "{build}");
        assert!(
            copied.iter().any(|c| c.contains(&format!("/out/{pkg}"))),
            "{pkg} is not copied into the runtime image"
        );
        // The binary target has the package's name.
        assert!(repo().join(&pkg[6..]).join("src/main.rs").exists());
    }

    // Runs as the non-root uid the StatefulSet expects.
    let user = instructions
        .iter()
        .rev()
        .find(|(i, _)| *i == "USER")
        .expect("a USER")
        .1;
    assert_eq!(user, "10001:10001");
    let sts = the_only(&manifests(), "StatefulSet").clone();
    assert_eq!(
        sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_u64(),
        Some(10001)
    );
}
