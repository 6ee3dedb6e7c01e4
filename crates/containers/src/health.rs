//! Health checks as Docker has them: the check an image or a container declares
//! ([`HealthConfig`], Docker's `Healthcheck` with its durations), and the state its probes lead
//! to ([`Health`]: starting, healthy after a probe exits 0, unhealthy after `retries` failures in
//! a row, failures in the start period not counted). The probes themselves are execs, run by the
//! engine (`engine/health.rs`).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Docker's defaults for a duration left at zero, and for retries.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRIES: u32 = 3;
/// The shortest duration Docker accepts for any of them (zero means "the default").
const MINIMUM_DURATION: Duration = Duration::from_millis(1);
/// How many probes the log keeps, and how much of a probe's output (as Docker).
const LOG_ENTRIES: usize = 5;
pub const MAX_OUTPUT: usize = 4096;

/// A health check. `test` is Docker's: empty (inherit the image's), `["NONE"]`, `["CMD", argv...]`
/// or `["CMD-SHELL", command]`. Zero durations and retries mean the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u32,
}

impl HealthConfig {
    /// `HEALTHCHECK [OPTIONS] CMD ...` of a Dockerfile: `test` is the CMD's argv as Docker keeps
    /// it (`CMD` or `CMD-SHELL` first), `options` its `--name=value` flags. Errors are Docker's.
    pub fn from_dockerfile(test: Vec<String>, options: &[(String, String)]) -> Result<HealthConfig, String> {
        let mut config = HealthConfig { test, ..HealthConfig::default() };
        for (name, value) in options {
            match name.as_str() {
                "retries" => {
                    let retries: i64 = value.parse().map_err(|_| format!("invalid --retries value {value:?}"))?;
                    config.retries =
                        u32::try_from(retries).map_err(|_| format!("--retries cannot be negative ({retries})"))?;
                }
                _ => {
                    let duration = parse_duration(value)?;
                    if !duration.is_zero() && duration < MINIMUM_DURATION {
                        return Err(format!("Interval \"{name}\" cannot be less than 1ms"));
                    }
                    match name.as_str() {
                        "interval" => config.interval = duration,
                        "timeout" => config.timeout = duration,
                        "start-period" => config.start_period = duration,
                        _ => config.start_interval = duration,
                    }
                }
            }
        }
        Ok(config)
    }

    /// `HEALTHCHECK NONE`, or `--no-healthcheck`.
    pub fn none() -> HealthConfig {
        HealthConfig { test: vec!["NONE".into()], ..HealthConfig::default() }
    }

    /// What the daemon refuses at create (Docker's messages).
    pub fn validate(&self) -> Result<(), String> {
        let durations = [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ];
        for (name, duration) in durations {
            if !duration.is_zero() && duration < MINIMUM_DURATION {
                return Err(format!("{name} in Healthcheck cannot be less than 1ms"));
            }
        }
        Ok(())
    }

    /// A container's check: its own fields where set, the image's for the rest (Docker's merge).
    pub fn merged(own: Option<&HealthConfig>, image: Option<&HealthConfig>) -> Option<HealthConfig> {
        let Some(own) = own else { return image.cloned() };
        let Some(image) = image else { return Some(own.clone()) };
        let pick = |own: Duration, image: Duration| if own.is_zero() { image } else { own };
        Some(HealthConfig {
            test: if own.test.is_empty() { image.test.clone() } else { own.test.clone() },
            interval: pick(own.interval, image.interval),
            timeout: pick(own.timeout, image.timeout),
            start_period: pick(own.start_period, image.start_period),
            start_interval: pick(own.start_interval, image.start_interval),
            retries: if own.retries == 0 { image.retries } else { own.retries },
        })
    }

    /// The argv a probe runs (`CMD-SHELL` through `shell`), or `None` when there is no check.
    pub fn probe_command(&self, shell: &[String]) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((kind, argv)) if kind == "CMD" && !argv.is_empty() => Some(argv.to_vec()),
            Some((kind, command)) if kind == "CMD-SHELL" && !command.is_empty() => {
                Some(shell.iter().cloned().chain([command.join(" ")]).collect())
            }
            _ => None,
        }
    }

    pub fn interval(&self) -> Duration {
        or_default(self.interval, DEFAULT_INTERVAL)
    }

    pub fn timeout(&self) -> Duration {
        or_default(self.timeout, DEFAULT_TIMEOUT)
    }

    pub fn start_interval(&self) -> Duration {
        or_default(self.start_interval, DEFAULT_START_INTERVAL)
    }

    pub fn retries(&self) -> u32 {
        if self.retries == 0 { DEFAULT_RETRIES } else { self.retries }
    }

    /// The wait before the next probe: the start interval while the container is still starting
    /// within its start period, else the interval.
    pub fn next_interval(&self, since_start: Duration, status: HealthStatus) -> Duration {
        if since_start < self.start_period && status == HealthStatus::Starting {
            self.start_interval()
        } else {
            self.interval()
        }
    }
}

/// A duration as Go prints it (`1m30s`, `500ms`), as Docker's messages show them.
pub fn go_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string().replace(' ', "")
}

fn or_default(duration: Duration, default: Duration) -> Duration {
    if duration.is_zero() { default } else { duration }
}

/// A Go duration as Dockerfiles write them (`30s`, `1m30s`, `500ms`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|_| format!("time: invalid duration \"{text}\""))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub start: SystemTime,
    pub end: SystemTime,
    /// 0 healthy, anything else a failure; -1 when it could not run or timed out.
    pub exit_code: i32,
    pub output: String,
}

/// A running container's health: Docker's `State.Health`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last probes, oldest first.
    pub log: VecDeque<Probe>,
}

impl Health {
    /// Takes a probe's result into account; returns whether the status changed. A failure while
    /// still starting and within the start period does not count.
    pub fn record(&mut self, probe: Probe, retries: u32, in_start_period: bool) -> bool {
        let before = self.status;
        if probe.exit_code == 0 {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !(self.status == HealthStatus::Starting && in_start_period) {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        if self.log.len() == LOG_ENTRIES {
            self.log.pop_front();
        }
        self.log.push_back(probe);
        self.status != before
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check(options_given: &[(&str, &str)]) -> Result<HealthConfig, String> {
        HealthConfig::from_dockerfile(vec!["CMD".into(), "true".into()], &options(options_given))
    }

    #[test]
    fn dockerfile_options_parse_like_docker() {
        let config = check(&[
            ("interval", "1m30s"),
            ("timeout", "500ms"),
            ("start-period", "2s"),
            ("start-interval", "1s"),
            ("retries", "4"),
        ])
        .unwrap();
        assert_eq!(config.interval, Duration::from_secs(90));
        assert_eq!(config.timeout, Duration::from_millis(500));
        assert_eq!(config.start_period, Duration::from_secs(2));
        assert_eq!(config.start_interval, Duration::from_secs(1));
        assert_eq!(config.retries, 4);
        assert_eq!(check(&[("interval", "0")]).unwrap().interval(), DEFAULT_INTERVAL);
        assert_eq!(check(&[("retries", "-1")]).unwrap_err(), "--retries cannot be negative (-1)");
        assert_eq!(check(&[("timeout", "10")]).unwrap_err(), "time: invalid duration \"10\"");
        assert_eq!(check(&[("interval", "10us")]).unwrap_err(), "Interval \"interval\" cannot be less than 1ms");
        assert!(check(&[("retries", "x")]).is_err());
    }

    #[test]
    fn probes_run_the_command_or_the_shell() {
        let shell = ["/bin/sh".to_string(), "-c".to_string()];
        let cmd = HealthConfig { test: vec!["CMD".into(), "ls".into(), "/".into()], ..Default::default() };
        assert_eq!(cmd.probe_command(&shell).unwrap(), ["ls", "/"]);
        let in_shell = HealthConfig { test: vec!["CMD-SHELL".into(), "exit 1".into()], ..Default::default() };
        assert_eq!(in_shell.probe_command(&shell).unwrap(), ["/bin/sh", "-c", "exit 1"]);
        assert_eq!(HealthConfig::none().probe_command(&shell), None);
        assert_eq!(HealthConfig::default().probe_command(&shell), None);
    }

    #[test]
    fn a_container_check_fills_its_gaps_from_the_image() {
        let image = HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: Duration::from_secs(5),
            retries: 2,
            ..Default::default()
        };
        let own = HealthConfig { timeout: Duration::from_secs(1), ..Default::default() };
        let merged = HealthConfig::merged(Some(&own), Some(&image)).unwrap();
        assert_eq!(merged.test, image.test);
        assert_eq!(
            (merged.interval, merged.timeout, merged.retries),
            (Duration::from_secs(5), Duration::from_secs(1), 2)
        );
        let none = HealthConfig::merged(Some(&HealthConfig::none()), Some(&image)).unwrap();
        assert_eq!(none.test, ["NONE"]);
        assert_eq!(HealthConfig::merged(None, Some(&image)), Some(image));
        assert_eq!(HealthConfig::merged(None, None), None);
    }

    fn probe(exit_code: i32) -> Probe {
        let now = SystemTime::now();
        Probe { start: now, end: now, exit_code, output: String::new() }
    }

    #[test]
    fn failures_count_after_the_start_period_until_retries() {
        let mut health = Health::default();
        assert!(!health.record(probe(1), 2, true), "a failure in the start period does not count");
        assert_eq!((health.status, health.failing_streak), (HealthStatus::Starting, 0));
        assert!(!health.record(probe(1), 2, false));
        assert_eq!(health.failing_streak, 1);
        assert!(health.record(probe(1), 2, false));
        assert_eq!(health.status, HealthStatus::Unhealthy);
        assert!(health.record(probe(0), 2, false));
        assert_eq!((health.status, health.failing_streak), (HealthStatus::Healthy, 0));
        // Once healthy, the start period no longer hides failures.
        health.record(probe(1), 1, true);
        assert_eq!(health.status, HealthStatus::Unhealthy);
        for _ in 0..10 {
            health.record(probe(0), 1, false);
        }
        assert_eq!(health.log.len(), LOG_ENTRIES);
    }

    #[test]
    fn the_start_interval_applies_while_starting_in_the_start_period() {
        let config = HealthConfig { start_period: Duration::from_secs(10), ..Default::default() };
        assert_eq!(config.next_interval(Duration::from_secs(1), HealthStatus::Starting), DEFAULT_START_INTERVAL);
        assert_eq!(config.next_interval(Duration::from_secs(1), HealthStatus::Healthy), DEFAULT_INTERVAL);
        assert_eq!(config.next_interval(Duration::from_secs(11), HealthStatus::Starting), DEFAULT_INTERVAL);
    }
}
