//! Restart policies, decided as Docker's restart manager does: `always` restarts whatever the
//! exit, `unless-stopped` unless a user stopped it, `on-failure[:N]` on a non-zero exit at most N
//! times. The delay starts at 100 ms and doubles up to a minute; a run of 10 s or more resets it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long starts the backoff over.
const STABLE_RUN: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    No,
    /// At most `max_retries` restarts; 0 means no limit.
    OnFailure {
        max_retries: u32,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// From Docker's `Name` and `MaximumRetryCount`.
    pub fn parse(name: &str, max_retries: i64) -> Result<RestartPolicy> {
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                let max_retries = u32::try_from(max_retries).map_err(|_| {
                    Error::InvalidParameter("invalid restart policy: maximum retry count cannot be negative".into())
                })?;
                return Ok(RestartPolicy::OnFailure { max_retries });
            }
            other => {
                return Err(Error::InvalidParameter(format!(
                    "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
                )));
            }
        };
        if max_retries != 0 {
            return Err(Error::InvalidParameter(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'".into(),
            ));
        }
        Ok(policy)
    }

    /// Docker's name for it.
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    pub fn max_retries(self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => max_retries,
            _ => 0,
        }
    }

    /// Whether a container that exited with `exit_code`, restarted `restarts` times so far, should
    /// be started again.
    pub fn should_restart(self, exit_code: i32, restarts: u32, manually_stopped: bool) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => !manually_stopped,
            RestartPolicy::UnlessStopped => !manually_stopped,
            RestartPolicy::OnFailure { max_retries } => {
                !manually_stopped && exit_code != 0 && (max_retries == 0 || restarts < max_retries)
            }
        }
    }

    /// Whether Stratus starting up starts the container again (as dockerd does on its start):
    /// `always` even if a user stopped it, `unless-stopped` only if no user did.
    pub fn restarts_with_stratus(self, manually_stopped: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !manually_stopped,
            RestartPolicy::No | RestartPolicy::OnFailure { .. } => false,
        }
    }
}

/// The delay before the next restart, given the previous one (zero for none) and how long the
/// container ran.
pub(crate) fn next_delay(previous: Duration, ran_for: Duration) -> Duration {
    if previous.is_zero() || ran_for >= STABLE_RUN { FIRST_DELAY } else { (previous * 2).min(MAX_DELAY) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn policies_parse_like_docker() {
        assert_eq!(RestartPolicy::parse("", 0).unwrap(), RestartPolicy::No);
        assert_eq!(RestartPolicy::parse("on-failure", 2).unwrap(), RestartPolicy::OnFailure { max_retries: 2 });
        assert_eq!(RestartPolicy::parse("unless-stopped", 0).unwrap().name(), "unless-stopped");
        assert!(RestartPolicy::parse("always", 3).is_err());
        assert!(RestartPolicy::parse("sometimes", 0).unwrap_err().to_string().contains("unknown policy"));
        assert!(RestartPolicy::parse("on-failure", -1).is_err());
    }

    #[test]
    fn decisions_follow_the_policy() {
        let on_failure = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(on_failure.should_restart(1, 0, false) && on_failure.should_restart(1, 1, false));
        assert!(!on_failure.should_restart(1, 2, false), "at most twice");
        assert!(!on_failure.should_restart(0, 0, false), "not on success");
        assert!(RestartPolicy::OnFailure { max_retries: 0 }.should_restart(1, 1000, false));
        assert!(RestartPolicy::Always.should_restart(0, 9, false));
        assert!(!RestartPolicy::Always.should_restart(0, 0, true), "docker stop stops it");
        assert!(!RestartPolicy::No.should_restart(1, 0, false));
        assert!(RestartPolicy::Always.restarts_with_stratus(true));
        assert!(!RestartPolicy::UnlessStopped.restarts_with_stratus(true));
        assert!(RestartPolicy::UnlessStopped.restarts_with_stratus(false));
    }

    #[test]
    fn the_delay_doubles_from_100ms_and_resets_after_a_stable_run() {
        let short = Duration::from_millis(5);
        let mut delay = Duration::ZERO;
        let mut delays = Vec::new();
        for _ in 0..4 {
            delay = next_delay(delay, short);
            delays.push(delay.as_millis());
        }
        assert_eq!(delays, vec![100, 200, 400, 800]);
        assert_eq!(next_delay(Duration::from_secs(50), short), MAX_DELAY);
        assert_eq!(next_delay(Duration::from_secs(8), Duration::from_secs(11)), FIRST_DELAY);
    }
}
