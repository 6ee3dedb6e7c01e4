//! The dependency rules of ARCHITECTURE.md, checked against `cargo metadata`.

// Test code fails by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

/// Crates that hold rules and state, never wire formats.
const CORE_AND_DOMAIN: &[&str] = &["store", "sts"];
/// What those must not depend on.
const WIRE: &[&str] =
    &["http", "hyper", "hyper-util", "axum", "serde", "serde_json", "quick-xml", "aws-protocol", "edge"];
/// Domain crates with JSON documents (policies, filter policies) and, for SNS, an HTTP client to
/// deliver with: they may use serde and hyper's client, never an adapter, a server or XML.
const DOMAIN_WITH_DOCUMENTS: &[&str] = &["sqs", "sns"];
/// Domain crates that keep serde only for their private storage records: no JSON, no HTTP.
const DOMAIN_WITH_RECORDS: &[&str] = &["dynamodb", "containers"];
const WIRE_BUT_RECORDS: &[&str] =
    &["http", "hyper", "hyper-util", "axum", "serde_json", "quick-xml", "aws-protocol", "edge"];
const ADAPTERS_AND_SERVERS: &[&str] = &["aws-protocol", "edge", "axum", "quick-xml"];
const ADAPTERS: &[&str] = &["aws-protocol", "docker-protocol"];

/// Each workspace package's normal (non-dev) dependencies.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    packages
        .iter()
        .map(|package| {
            let deps = package["dependencies"].as_array().unwrap();
            let normal = deps.iter().filter(|d| d["kind"].is_null()).map(|d| d["name"].as_str().unwrap().to_string());
            (package["name"].as_str().unwrap().to_string(), normal.collect())
        })
        .collect()
}

#[test]
fn domains_know_no_wire_formats_and_adapters_not_each_other() {
    let all = dependencies();
    let mut listed = CORE_AND_DOMAIN.iter().chain(DOMAIN_WITH_DOCUMENTS).chain(DOMAIN_WITH_RECORDS).chain(ADAPTERS);
    assert!(listed.all(|name| all.contains_key(*name)), "a listed crate was renamed");
    for (package, deps) in &all {
        let forbidden: &[&str] = if CORE_AND_DOMAIN.contains(&package.as_str()) {
            WIRE
        } else if DOMAIN_WITH_RECORDS.contains(&package.as_str()) {
            WIRE_BUT_RECORDS
        } else if DOMAIN_WITH_DOCUMENTS.contains(&package.as_str()) {
            ADAPTERS_AND_SERVERS
        } else if ADAPTERS.contains(&package.as_str()) {
            &["edge", "stratus"]
        } else {
            &[]
        };
        for dep in deps {
            assert!(!forbidden.contains(&dep.as_str()), "{package} must not depend on {dep}");
            assert!(dep != "stratus", "{package} depends on the binary");
            assert!(dep != "anyhow" || package == "stratus", "{package} uses anyhow; libraries use thiserror");
            let adapter_on_adapter = ADAPTERS.contains(&package.as_str()) && ADAPTERS.contains(&dep.as_str());
            assert!(!adapter_on_adapter, "adapters do not depend on each other: {package} -> {dep}");
        }
    }
}
