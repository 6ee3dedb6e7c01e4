//! Docker's JSON for health checks and for the image config fields oci-spec has no place for:
//! `Healthcheck` (durations in nanoseconds), `Shell` and `OnBuild` in a config's `config`, a
//! container's `State.Health`, and the `--health-*` flags as the CLI sends them.

use std::time::{Duration, SystemTime};

use containers::Error;
use containers::health::{Health, HealthConfig};
use containers::image::{ConfigJson, DockerFields};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Docker's `HealthConfig`, as image configs and create bodies carry it (docker-py sends nulls
/// for what is unset; zeros are left out, as Docker writes it).
#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthcheckBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<i64>,
}

impl HealthcheckBody {
    /// The check, refusing what the daemon refuses (Docker's messages).
    pub fn config(&self) -> Result<HealthConfig, Error> {
        let duration = |name: &str, nanos: Option<i64>| {
            u64::try_from(nanos.unwrap_or(0))
                .map(Duration::from_nanos)
                .map_err(|_| Error::InvalidParameter(format!("{name} in Healthcheck cannot be less than 1ms")))
        };
        let retries = u32::try_from(self.retries.unwrap_or(0))
            .map_err(|_| Error::InvalidParameter("Retries in Healthcheck cannot be negative".into()))?;
        let config = HealthConfig {
            test: self.test.clone().unwrap_or_default(),
            interval: duration("Interval", self.interval)?,
            timeout: duration("Timeout", self.timeout)?,
            start_period: duration("StartPeriod", self.start_period)?,
            start_interval: duration("StartInterval", self.start_interval)?,
            retries,
        };
        config.validate().map_err(Error::InvalidParameter)?;
        Ok(config)
    }

    pub fn from_config(config: &HealthConfig) -> HealthcheckBody {
        let nanos = |duration: Duration| {
            Some(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)).filter(|nanos| *nanos != 0)
        };
        HealthcheckBody {
            test: Some(config.test.clone()).filter(|test| !test.is_empty()),
            interval: nanos(config.interval),
            timeout: nanos(config.timeout),
            start_period: nanos(config.start_period),
            start_interval: nanos(config.start_interval),
            retries: Some(i64::from(config.retries)).filter(|retries| *retries != 0),
        }
    }
}

pub fn healthcheck_json(config: Option<&HealthConfig>) -> Value {
    config.map_or(Value::Null, |config| json!(HealthcheckBody::from_config(config)))
}

/// A container's `State.Health`.
pub fn health_json(health: &Health) -> Value {
    let time = |t: SystemTime| humantime::format_rfc3339_nanos(t).to_string();
    let log: Vec<Value> = health
        .log
        .iter()
        .map(|probe| {
            json!({
                "Start": time(probe.start),
                "End": time(probe.end),
                "ExitCode": probe.exit_code,
                "Output": probe.output,
            })
        })
        .collect();
    json!({"Status": health.status.as_str(), "FailingStreak": health.failing_streak, "Log": log})
}

/// The Docker fields of an image config's `config`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DockerFieldsBody {
    healthcheck: Option<HealthcheckBody>,
    shell: Option<Vec<String>>,
    on_build: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigDocument {
    config: Option<DockerFieldsBody>,
}

/// The engine's [`ConfigJson`]: reads and writes `Healthcheck`, `Shell` and `OnBuild` in
/// image configs, as Docker writes them.
pub struct DockerConfigJson;

impl ConfigJson for DockerConfigJson {
    fn read(&self, config_json: &[u8]) -> Result<DockerFields, String> {
        let document: ConfigDocument = serde_json::from_slice(config_json).map_err(|e| e.to_string())?;
        let fields = document.config.unwrap_or_default();
        Ok(DockerFields {
            healthcheck: fields.healthcheck.map(|body| body.config()).transpose().map_err(|e| e.to_string())?,
            shell: fields.shell.unwrap_or_default(),
            on_build: fields.on_build.unwrap_or_default(),
        })
    }

    fn write(&self, oci_json: &str, fields: &DockerFields) -> Result<Vec<u8>, String> {
        let mut document: Value = serde_json::from_str(oci_json).map_err(|e| e.to_string())?;
        let Some(root) = document.as_object_mut() else { return Err("an image config is not an object".into()) };
        let config = root.entry("config").or_insert_with(|| json!({}));
        let Some(config) = config.as_object_mut() else {
            return Err("an image config's config is not an object".into());
        };
        if let Some(check) = &fields.healthcheck {
            config.insert("Healthcheck".into(), json!(HealthcheckBody::from_config(check)));
        }
        if !fields.shell.is_empty() {
            config.insert("Shell".into(), json!(fields.shell));
        }
        if !fields.on_build.is_empty() {
            config.insert("OnBuild".into(), json!(fields.on_build));
        }
        serde_json::to_vec(&document).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn docker_fields_round_trip_through_a_config() {
        let fields = DockerFields {
            healthcheck: Some(HealthConfig {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval: Duration::from_secs(5),
                retries: 2,
                ..HealthConfig::default()
            }),
            shell: vec!["/bin/ash".into(), "-c".into()],
            on_build: vec!["RUN echo hi".into()],
        };
        let written = DockerConfigJson.write(r#"{"architecture":"amd64","config":{"Env":["A=1"]}}"#, &fields).unwrap();
        let value: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(
            value["config"]["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000i64, "Retries": 2})
        );
        assert_eq!(value["config"]["Env"], json!(["A=1"]));
        assert_eq!(DockerConfigJson.read(&written).unwrap(), fields);
        assert_eq!(DockerConfigJson.read(br#"{"config":{"OnBuild":null}}"#).unwrap(), DockerFields::default());
        assert!(DockerConfigJson.read(br#"{"config":{"Healthcheck":{"Retries":-1}}}"#).is_err());
    }

    #[test]
    fn create_bodies_are_checked_as_the_daemon_does() {
        let body = |text: &str| serde_json::from_str::<HealthcheckBody>(text).unwrap().config();
        let ok = body(r#"{"Test":["CMD","true"],"Interval":1000000000,"StartInterval":2000000}"#).unwrap();
        assert_eq!((ok.interval, ok.start_interval), (Duration::from_secs(1), Duration::from_millis(2)));
        assert_eq!(
            body(r#"{"Interval":5}"#).unwrap_err().to_string(),
            "Interval in Healthcheck cannot be less than 1ms"
        );
        assert_eq!(body(r#"{"Test":null,"Interval":null}"#).unwrap(), HealthConfig::default());
        assert_eq!(body(r#"{"Retries":-2}"#).unwrap_err().to_string(), "Retries in Healthcheck cannot be negative");
    }
}
