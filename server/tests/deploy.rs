//! The deployment files in `deploy/` name only what exists: every tracehouse container's
//! arguments and configuration pass the real binary's `-config.verify` (known target, known
//! config keys and flags, complete Kafka and storage settings), its declared ports are exactly
//! the ones that target listens on, probes and Services point at those ports, and the
//! addresses inside the configuration name Services (Kubernetes) or services (docker-compose)
//! that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../deploy")
}

/// What `tracehouse -config.verify` says about one container.
#[derive(Debug)]
struct Verified {
    target: String,
    /// Role (`http`, `otlp-grpc`, ...) → port.
    ports: BTreeMap<String, u16>,
}

/// Runs the binary's `-config.verify` with `args`, the config file replaced by `config`.
fn verify(args: &[String], config: &str, what: &str) -> Verified {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tracehouse.yaml");
    std::fs::write(&file, config).unwrap();
    let mut args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.starts_with("-config.file=") {
                format!("-config.file={}", file.display())
            } else {
                a.clone()
            }
        })
        .collect();
    assert!(
        args.iter().any(|a| a.starts_with("-config.file=")),
        "{what}: no -config.file in {args:?}"
    );
    args.push("-config.verify".into());
    let out = Command::new(env!("CARGO_BIN_EXE_tracehouse"))
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: tracehouse {args:?} rejects its configuration: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut target = None;
    let mut ports = BTreeMap::new();
    for line in stdout.lines() {
        if let Some(t) = line.strip_prefix("config ok: target ") {
            target = Some(t.to_string());
        } else if let Some(rest) = line.strip_prefix("listen ") {
            let (role, address) = rest.split_once(' ').unwrap();
            let port = address.rsplit_once(':').unwrap().1.parse().unwrap();
            ports.insert(role.to_string(), port);
        }
    }
    Verified {
        target: target.unwrap_or_else(|| panic!("{what}: no target in {stdout}")),
        ports,
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], |s| s.as_slice())
}

/// `host:port` → (host, port).
fn host_port(address: &str) -> (&str, u16) {
    let (h, p) = address.rsplit_once(':').unwrap();
    (h, p.parse().unwrap())
}

fn kubernetes_docs() -> Vec<Value> {
    let mut docs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                v["apiVersion"].is_string() && v["kind"].is_string(),
                "{}: {v:?}",
                file.display()
            );
            docs.push(v);
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A container port by name or number.
fn resolve_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"] == *port)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {port:?}")) as u16
}

#[test]
fn kubernetes_manifests_name_only_existing_targets_ports_and_keys() {
    let docs = kubernetes_docs();
    let mut targets = BTreeSet::new();
    // Pod labels and the tracehouse container of every workload.
    let mut pods: Vec<(BTreeMap<String, String>, Value, Verified)> = Vec::new();
    for w in docs
        .iter()
        .filter(|d| ["Deployment", "StatefulSet", "CronJob"].iter().any(|k| d["kind"] == *k))
    {
        let name = s(&w["metadata"]["name"]);
        let job = w["kind"] == "CronJob";
        // A CronJob's pods are its jobs' pods.
        let template = match job {
            true => &w["spec"]["jobTemplate"]["spec"]["template"],
            false => &w["spec"]["template"],
        };
        let spec = &template["spec"];
        let labels: BTreeMap<String, String> = serde_yaml::from_value(template["metadata"]["labels"].clone()).unwrap();
        if !job {
            let selector: BTreeMap<String, String> =
                serde_yaml::from_value(w["spec"]["selector"]["matchLabels"].clone()).unwrap();
            assert!(
                selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
                "{name}: selector does not match its pods"
            );
        }
        if w["kind"] == "StatefulSet" {
            find(&docs, "Service", s(&w["spec"]["serviceName"]));
        }
        for c in seq(&spec["containers"])
            .iter()
            .filter(|c| s(&c["image"]).starts_with("tracehouse"))
        {
            let what = format!("{name}/{}", s(&c["name"]));
            let env: BTreeMap<&str, &Value> = seq(&c["env"]).iter().map(|e| (s(&e["name"]), e)).collect();
            for e in env.values() {
                if let Some(r) = e["valueFrom"]["secretKeyRef"].as_mapping() {
                    let secret = find(&docs, "Secret", s(&r[&Value::from("name")]));
                    let key = &r[&Value::from("key")];
                    assert!(
                        !secret["stringData"][key].is_null() || !secret["data"][key].is_null(),
                        "{what}: secret key {key:?} missing"
                    );
                }
            }
            // $(VAR) in args expands from the container's env; anything else stays literal.
            let args: Vec<String> = seq(&c["args"])
                .iter()
                .map(|a| {
                    let mut a = s(a).to_string();
                    while let Some(start) = a.find("$(") {
                        let end = start + a[start..].find(')').unwrap();
                        let var = &a[start + 2..end];
                        assert!(env.contains_key(var), "{what}: $({var}) is not in the container's env");
                        a.replace_range(start..=end, "placeholder");
                    }
                    a
                })
                .collect();
            let config_path = args
                .iter()
                .find_map(|a| a.strip_prefix("-config.file="))
                .unwrap_or_else(|| panic!("{what}: no -config.file"));
            let mount = seq(&c["volumeMounts"])
                .iter()
                .find(|m| Path::new(config_path).parent() == Some(Path::new(s(&m["mountPath"]))))
                .unwrap_or_else(|| panic!("{what}: {config_path} is not on a mounted volume"));
            let volume = seq(&spec["volumes"])
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            let map = find(&docs, "ConfigMap", s(&volume["configMap"]["name"]));
            let file_name = Path::new(config_path).file_name().unwrap().to_str().unwrap();
            let config = s(&map["data"][file_name]);
            let verified = verify(&args, config, &what);

            let declared: BTreeMap<String, u16> = seq(&c["ports"])
                .iter()
                .map(|p| (s(&p["name"]).to_string(), p["containerPort"].as_u64().unwrap() as u16))
                .collect();
            assert_eq!(
                declared, verified.ports,
                "{what}: declared ports differ from what -target={} listens on",
                verified.target
            );
            targets.insert(verified.target.clone());
            if job {
                // A job runs to its end: no probe, and (checked above) no ports.
                assert!(c["readinessProbe"].is_null(), "{what}: a job has no readiness probe");
                assert_eq!(spec["restartPolicy"], "OnFailure", "{what}");
                continue;
            }
            let probe = &c["readinessProbe"]["httpGet"];
            assert_eq!(s(&probe["path"]), "/ready", "{what}");
            assert_eq!(
                resolve_port(c, &probe["port"]),
                verified.ports["http"],
                "{what}: probe port"
            );
            pods.push((labels.clone(), c.clone(), verified));
        }
    }
    assert_eq!(
        targets,
        ["block-builder", "compact", "distributor", "live-store", "querier"]
            .map(String::from)
            .into(),
        "every microservices target is deployed, and the scheduled upkeep job"
    );

    // Every Service selects tracehouse pods and forwards to ports they declare.
    let mut services: BTreeMap<String, (String, BTreeSet<u16>)> = BTreeMap::new();
    for svc in docs.iter().filter(|d| d["kind"] == "Service") {
        let name = s(&svc["metadata"]["name"]).to_string();
        let selector: BTreeMap<String, String> = serde_yaml::from_value(svc["spec"]["selector"].clone()).unwrap();
        let (_, container, verified) = pods
            .iter()
            .find(|(labels, _, _)| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("service {name} selects no tracehouse pods"));
        let mut ports = BTreeSet::new();
        for p in seq(&svc["spec"]["ports"]) {
            let target_port = resolve_port(container, &p["targetPort"]);
            assert!(
                verified.ports.values().any(|v| *v == target_port),
                "service {name}: port {target_port}"
            );
            ports.insert(p["port"].as_u64().unwrap() as u16);
        }
        services.insert(name, (verified.target.clone(), ports));
    }
    // Addresses in the configuration point at Services of the right component.
    let config: Value = serde_yaml::from_str(s(
        &find(&docs, "ConfigMap", "tracehouse-config")["data"]["tracehouse.yaml"],
    ))
    .unwrap();
    let live = seq(&config["querier"]["live_store_addresses"]);
    assert!(!live.is_empty());
    for address in live {
        let (host, port) = host_port(s(address));
        let (target, ports) = services.get(host).unwrap_or_else(|| panic!("no Service {host}"));
        assert_eq!(target, "live-store");
        assert!(ports.contains(&port), "{host}:{port}");
    }
}

#[test]
fn docker_compose_names_only_existing_targets_ports_and_keys() {
    let dir = deploy_dir();
    let compose: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("docker-compose.yaml")).unwrap()).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(s).collect();
    let mut targets: BTreeMap<&str, Verified> = BTreeMap::new();
    let mut config_text = None;
    for (name, svc) in services {
        let name = s(name);
        for dep in svc["depends_on"]
            .as_mapping()
            .map(|m| m.keys().collect::<Vec<_>>())
            .unwrap_or_else(|| seq(&svc["depends_on"]).iter().collect())
        {
            assert!(names.contains(s(dep)), "{name} depends on unknown service {dep:?}");
        }
        if !s(&svc["image"]).starts_with("tracehouse") {
            continue;
        }
        let build = &svc["build"];
        let dockerfile = dir.join(s(&build["context"])).join(s(&build["dockerfile"]));
        assert!(dockerfile.is_file(), "{name}: {} missing", dockerfile.display());
        let args: Vec<String> = seq(&svc["command"]).iter().map(|a| s(a).to_string()).collect();
        let config_path = args.iter().find_map(|a| a.strip_prefix("-config.file=")).unwrap();
        let host_file = seq(&svc["volumes"])
            .iter()
            .find_map(|v| {
                let mut parts = s(v).split(':');
                let (host, container) = (parts.next()?, parts.next()?);
                (container == config_path).then(|| dir.join(host))
            })
            .unwrap_or_else(|| panic!("{name}: {config_path} is not mounted"));
        let text = std::fs::read_to_string(host_file).unwrap();
        let verified = verify(&args, &text, name);
        for p in seq(&svc["ports"]) {
            let container_port: u16 = s(p).rsplit(':').next().unwrap().parse().unwrap();
            assert!(
                verified.ports.values().any(|v| *v == container_port),
                "{name}: publishes {container_port}, listens on {:?}",
                verified.ports
            );
        }
        config_text = Some(text);
        targets.insert(name, verified);
    }
    let by_target: BTreeSet<&str> = targets.values().map(|v| v.target.as_str()).collect();
    assert_eq!(
        by_target,
        ["block-builder", "compactor", "distributor", "live-store", "querier"].into()
    );
    assert!(
        targets.values().filter(|v| v.target == "block-builder").count() >= 2,
        "two block-builders"
    );

    // The configuration's addresses are services of this file.
    let config: Value = serde_yaml::from_str(&config_text.unwrap()).unwrap();
    for broker in s(&config["ingest"]["kafka"]["address"]).split(',') {
        assert!(names.contains(host_port(broker).0), "kafka address {broker}");
    }
    assert!(names.contains(host_port(s(&config["storage"]["trace"]["s3"]["endpoint"])).0));
    for address in seq(&config["querier"]["live_store_addresses"]) {
        let (host, port) = host_port(s(address));
        let v = targets.get(host).unwrap_or_else(|| panic!("no service {host}"));
        assert_eq!((v.target.as_str(), v.ports["http"]), ("live-store", port));
    }
}
